"""Case: one benchmark problem, frozen. Pure Python: no torch, so suites expand fast."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from math import prod

from natbench.dtypes import canonical_dtype
from natbench.errors import InvalidProblemError
from natbench.flops import PASS_MULTIPLIER, full_forward_flops, na_forward_flops, wsa_forward_flops
from natbench.geometry import NAGeometry, as_tuple

PASSES = tuple(PASS_MULTIPLIER)
DEVICES = ("cpu", "cuda")


def _positive_int(value, name: str) -> int:
    """`value` as a positive int, or InvalidProblemError naming `name` and the value."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidProblemError(f"{name} {value!r} is not an integer; use a positive integer.")
    if value < 1:
        raise InvalidProblemError(f"{name} {value} < 1; use a positive {name}.")
    return value


@dataclass(frozen=True)
class Case:
    """One problem: shapes, geometry, dtype, device and pass. Per-axis fields are tuples."""

    rank: int
    batch: int
    heads: int
    head_dim: int
    resolution: tuple[int, ...]
    kernel_size: tuple[int, ...]
    dilation: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    is_causal: tuple[bool, ...] = ()
    rpb: bool = False
    dtype: str = "float32"
    device: str = "cpu"
    pass_: str = "fwd"

    @classmethod
    def build(cls, rank: int, batch: int, heads: int, head_dim: int, resolution, kernel_size,
              dilation=1, stride=1, is_causal=False, rpb=False, dtype="float32", device="cpu",
              pass_="fwd") -> Case:
        """Broadcast ints to per-axis tuples and canonicalise names; does not validate geometry."""
        rank = _positive_int(rank, "rank")
        if rank not in (1, 2, 3):
            raise InvalidProblemError(f"rank {rank} is not 1, 2 or 3; use rank = 1, 2 or 3.")
        if pass_ not in PASSES:
            raise InvalidProblemError(f"pass {pass_!r} is not one of {', '.join(PASSES)}.")
        if device not in DEVICES:
            raise InvalidProblemError(f"device {device!r} is not one of {', '.join(DEVICES)}.")
        for name, value in (("batch", batch), ("heads", heads), ("head_dim", head_dim)):
            _positive_int(value, name)

        def ints(value, name):
            if isinstance(value, str):
                raise InvalidProblemError(f"{name} {value!r} is not an integer; use an int, or one "
                                          f"per spatial axis.")
            return tuple(_positive_int(x, name) for x in as_tuple(value, rank, name))

        return cls(rank=rank, batch=int(batch), heads=int(heads), head_dim=int(head_dim),
                   resolution=ints(resolution, "resolution"),
                   kernel_size=ints(kernel_size, "kernel_size"),
                   dilation=ints(dilation, "dilation"), stride=ints(stride, "stride"),
                   is_causal=tuple(bool(x) for x in as_tuple(is_causal, rank, "is_causal")),
                   rpb=bool(rpb), dtype=canonical_dtype(dtype), device=device, pass_=pass_)

    @property
    def geometry(self) -> NAGeometry:
        return NAGeometry(self.resolution, self.kernel_size, self.dilation, self.stride,
                          self.is_causal)

    @property
    def tokens(self) -> int:
        return prod(self.resolution)

    @property
    def needs_backward(self) -> bool:
        return self.pass_ != "fwd"

    def validate(self) -> None:
        """Raise InvalidProblemError if no correct NA implementation could run this case."""
        self.geometry.validate(rpb=self.rpb)

    def with_(self, **changes) -> Case:
        return replace(self, **changes)

    def flops(self, op: str = "na") -> int:
        """FLOPs of this case's pass for an operator: 'na', 'wsa' (window = kernel) or 'full'."""
        if op == "na":
            forward = na_forward_flops(self.batch, self.heads, self.geometry, self.head_dim)
        elif op == "wsa":
            forward = wsa_forward_flops(self.batch, self.heads, self.resolution, self.kernel_size,
                                        self.head_dim)[0]
        elif op == "full":
            forward = full_forward_flops(self.batch, self.heads, self.resolution, self.head_dim)
        else:
            raise ValueError(f"unknown operator {op!r}")
        return forward * PASS_MULTIPLIER[self.pass_]

    def to_record(self) -> dict:
        """Flat fields for a results row: per-axis tuples become lists, `pass_` becomes `pass`."""
        record = asdict(self)
        record["pass"] = record.pop("pass_")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}

    @classmethod
    def from_record(cls, record: dict) -> Case:
        names = {f.name for f in fields(cls)} - {"pass_"}
        values = {k: record[k] for k in names if k in record}
        return cls.build(pass_=record.get("pass", "fwd"), **values)

    @property
    def key(self) -> str:
        """A stable identifier of the problem (not of the backend) for resume and compare."""
        def axes(values):
            return "x".join(str(int(v)) for v in values)

        causal = axes(self.is_causal) if any(self.is_causal) else "0"
        return (f"r{self.rank}-b{self.batch}-h{self.heads}-d{self.head_dim}-s{axes(self.resolution)}"
                f"-k{axes(self.kernel_size)}-dil{axes(self.dilation)}-st{axes(self.stride)}"
                f"-c{causal}-rpb{int(self.rpb)}-{self.dtype}-{self.device}-{self.pass_}")


# How a model's pair with a backend of the other family (NAT on swin) is skipped: such pairs are
# no news, and tables leave them out (console.network_view).
OTHER_FAMILY = "runs its attention on"


@dataclass(frozen=True)
class ModelCase:
    """One network problem (natbench.models): a model on `batch` images of image_size x
    image_size. Its backend is the one its attention runs on; its FLOPs are twice its MACs."""

    model: str
    image_size: int
    batch: int
    dtype: str = "float32"
    device: str = "cpu"
    pass_: str = "fwd"

    @classmethod
    def build(cls, model: str, image_size: int = 224, batch: int = 1, dtype="float32", device="cpu",
              pass_="fwd") -> ModelCase:
        if pass_ not in PASSES:
            raise InvalidProblemError(f"pass {pass_!r} is not one of {', '.join(PASSES)}.")
        if device not in DEVICES:
            raise InvalidProblemError(f"device {device!r} is not one of {', '.join(DEVICES)}.")
        return cls(str(model), _positive_int(image_size, "image_size"), _positive_int(batch, "batch"),
                   canonical_dtype(dtype), device, pass_)

    @property
    def needs_backward(self) -> bool:
        return self.pass_ != "fwd"

    def validate(self) -> None:
        from natbench.models import CONFIGS

        if self.model not in CONFIGS:
            raise InvalidProblemError(f"unknown model {self.model!r}; models: {', '.join(CONFIGS)}.")
        if self.image_size < 32 and not CONFIGS[self.model].pair:
            raise InvalidProblemError(f"image_size {self.image_size} < 32: the networks downsample 32x.")

    def with_(self, **changes) -> ModelCase:
        return replace(self, **changes)

    def flops(self, op: str = "model") -> int:
        """2 x the MACs of the batch's images (natbench.models.count), times the pass's multiplier."""
        from natbench.models import count

        return 2 * count(self.model, self.image_size).macs * self.batch * PASS_MULTIPLIER[self.pass_]

    def to_record(self) -> dict:
        record = asdict(self)
        record["pass"] = record.pop("pass_")
        return record

    @property
    def key(self) -> str:
        return f"model-{self.model}-i{self.image_size}-b{self.batch}-{self.dtype}-{self.device}-{self.pass_}"


def case_from_record(record: dict) -> Case | ModelCase:
    """The case of a results row: a network's when the row names a model."""
    if record.get("model"):
        return ModelCase.build(record["model"], record["image_size"], record["batch"], record["dtype"],
                               record["device"], record.get("pass", "fwd"))
    return Case.from_record(record)
