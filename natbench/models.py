"""NAT, DiNAT and Swin as whole networks, for measuring what the attention costs inside a model.

    model = natbench.models.create("nat_tiny", backend="natten")   # any NA backend
    model = natbench.models.create("swin_tiny", backend="swin")    # swin or swin-explicit

The configurations are the published ones (docs/models.md): NAT (arXiv 2204.07143) with its
convolutional tokenizer, four stages of neighborhood attention at kernel 7 with relative
positional bias, strided-convolution downsamplers, MLP ratio and layer scale as released; DiNAT
(arXiv 2209.15001), the same networks with dilated NA in every other block, the dilation the
largest that fits the stage's map; Swin (arXiv 2103.14030) with window 7, shifted windows and
their mask, relative position bias and patch merging. Weights are random: the cost of a network
does not depend on them.

The NA layers call a natbench backend's forward on the public heads-last layout, so the layout a
backend needs (Swin's roll, padding and partition included) is part of the measured time here,
unlike in the operator suites. A map smaller than kernel x dilation is padded and the output
cropped, as the NAT code does.

`count(model, image_size)` counts parameters and multiply-accumulates (MACs, what fvcore and the
papers call FLOPs) from a forward on the meta device: convolutions and linears, and attention as
its two products (QK and AV: 2 x heads x queries x keys per query x head dim). Norms,
activations, softmax, pooling and additions are not counted.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from natbench.case import OTHER_FAMILY
from natbench.errors import UnsupportedError


@dataclass(frozen=True)
class Config:
    family: str  # nat, dinat or swin
    dim: int
    depths: tuple
    heads: tuple
    mlp_ratio: float
    kernel: int = 7  # NA kernel, or Swin's window
    layer_scale: float | None = None
    params_m: float = 0.0  # the published parameter count (millions)
    gmacs: float = 0.0  # the published "GFLOPs" at 224x224 (multiply-accumulates)
    pair: bool = False  # two blocks on a [B, map, map, dim] feature map, not a network on images
    stage: int = 0  # a pair's Swin-T stage, whose channels and heads it has


_NAT = {"mini": (64, (3, 4, 6, 5), (2, 4, 8, 16), 3.0, None, 20, 2.7),
        "tiny": (64, (3, 4, 18, 5), (2, 4, 8, 16), 3.0, None, 28, 4.3),
        "small": (96, (3, 4, 18, 5), (3, 6, 12, 24), 2.0, 1e-5, 51, 7.8),
        "base": (128, (3, 4, 18, 5), (4, 8, 16, 32), 2.0, 1e-5, 90, 13.7)}
_SWIN = {"tiny": (96, (2, 2, 6, 2), (3, 6, 12, 24), 28, 4.5),
         "small": (96, (2, 2, 18, 2), (3, 6, 12, 24), 50, 8.7),
         "base": (128, (2, 2, 18, 2), (4, 8, 16, 32), 88, 15.4)}

CONFIGS = {
    **{f"{family}_{size}": Config(family, dim, depths, heads, mlp, 7, scale, params, macs)
       for family in ("nat", "dinat") for size, (dim, depths, heads, mlp, scale, params, macs) in _NAT.items()},
    **{f"swin_{size}": Config("swin", dim, depths, heads, 4.0, 7, None, params, macs)
       for size, (dim, depths, heads, params, macs) in _SWIN.items()},
    # The paper's layer comparison: a pair of blocks, NA + NA against WSA + shifted WSA, at Swin-T's
    # first-stage shape (96 channels, 3 heads, MLP ratio 4; `image_size` is the map's side), and
    # at its later stages' shapes (`_s2`..`_s4`: channels and heads doubling a stage).
    **{f"{family}_pair{'' if stage == 1 else f'_s{stage}'}":
       Config(family, 96 << (stage - 1), (2,), (3 << (stage - 1),), 4.0, pair=True, stage=stage)
       for family in ("nat", "swin") for stage in (1, 2, 3, 4)},
}
NA_FAMILIES = ("nat", "dinat")
SIZES = ("mini", "tiny", "small", "base")  # smallest first


# ---- counting multiply-accumulates ----

_counter: list | None = None  # while count() runs: the MACs counted so far, in one cell


@contextmanager
def _counting():
    global _counter
    _counter = [0]
    try:
        yield _counter
    finally:
        _counter = None


def _add(macs: int) -> bool:
    """Adds to the count when counting; returns whether the caller is in a counting pass."""
    if _counter is None:
        return False
    _counter[0] += int(macs)
    return True


def _conv_and_linear_hook(module, inputs, output):
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        _add(output.numel() * module.in_channels // module.groups * kh * kw)
    elif isinstance(module, nn.Linear):
        _add(output.numel() * module.in_features)


@dataclass(frozen=True)
class Count:
    params: int
    macs: int


@lru_cache(maxsize=None)
def count(name: str, image_size: int = 224, rpb: bool | None = None) -> Count:
    """Parameters and MACs of one image through model `name`, counted on the meta device (once
    per model, size and bias: every round of a run binds its model again)."""
    swin = name in CONFIGS and CONFIGS[name].family == "swin"
    with torch.device("meta"):
        model = create(name, backend="swin" if swin else "reference", image_size=image_size, rpb=rpb)
    hooks = [m.register_forward_hook(_conv_and_linear_hook) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with _counting() as total, torch.no_grad():
            model(torch.empty(input_shape(name, 1, image_size), device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return Count(sum(p.numel() for p in model.parameters()), total[0])


# ---- layers ----

class Mlp(nn.Module):
    def __init__(self, dim: int, ratio: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, int(dim * ratio))
        self.act = nn.GELU()
        self.fc2 = nn.Linear(int(dim * ratio), dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class NeighborhoodAttention(nn.Module):
    """NAT's attention layer on channels-last [B, H, W, C], its NA computed by a natbench backend."""

    def __init__(self, dim: int, heads: int, kernel: int, dilation: int, backend, rpb: bool = True):
        super().__init__()
        self.heads, self.kernel, self.dilation, self.backend = heads, kernel, dilation, backend
        self._cases = {}  # (batch, h, w, dtype, device) -> the backend's Case, built once
        self.qkv = nn.Linear(dim, 3 * dim)
        self.rpb = nn.Parameter(torch.zeros(heads, 2 * kernel - 1, 2 * kernel - 1)) if rpb else None
        if rpb:
            nn.init.trunc_normal_(self.rpb, std=0.02)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        from natbench.case import Case

        batch, height, width, dim = x.shape
        span = self.kernel * self.dilation
        pad_h, pad_w = max(0, span - height), max(0, span - width)
        if pad_h or pad_w:  # a map smaller than the window: padded, then cropped (as NAT does)
            x = nn.functional.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        h, w = height + pad_h, width + pad_w
        head_dim = dim // self.heads
        q, k, v = self.qkv(x).reshape(batch, h, w, 3, self.heads, head_dim).unbind(3)
        if _add(2 * batch * self.heads * h * w * self.kernel ** 2 * head_dim):
            out = torch.empty_like(v)
        else:
            key = (batch, h, w, x.dtype, x.device.type)
            if key not in self._cases:
                self._cases[key] = Case.build(2, batch, self.heads, head_dim, (h, w), self.kernel,
                                              self.dilation, rpb=self.rpb is not None,
                                              dtype=str(x.dtype).removeprefix("torch."), device=x.device.type)
            out = self.backend.forward(q, k, v, self._cases[key], self.rpb)
        out = out.reshape(batch, h, w, dim)[:, :height, :width]
        return self.proj(out)


class WindowAttention(nn.Module):
    """Swin's (shifted) window attention on channels-last [B, H, W, C]: roll, pad, partition,
    mask and reverse included, the attention inside the windows by sdpa (`swin`) or an explicit
    softmax (`swin-explicit`)."""

    def __init__(self, dim: int, heads: int, window: int, shifted: bool, explicit: bool):
        super().__init__()
        self.heads, self.window, self.shifted, self.explicit = heads, window, shifted, explicit
        # (h, w, device) -> the window plan (masks, bias index), built once as Swin builds its
        # attention mask at construction: it is no part of a forward's cost
        self._plans = {}
        self.qkv = nn.Linear(dim, 3 * dim)
        self.table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.table, std=0.02)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        from natbench.backends.swin import plan_windows, window_attention

        batch, height, width, dim = x.shape
        head_dim = dim // self.heads
        q, k, v = self.qkv(x).reshape(batch, height, width, 3, self.heads, head_dim).unbind(3)
        windows = math.ceil(height / self.window) * math.ceil(width / self.window)  # after padding
        if _add(2 * batch * self.heads * windows * self.window ** 4 * head_dim):
            out = torch.empty_like(v)
        else:
            key = (height, width, x.device)
            if key not in self._plans:
                self._plans[key] = plan_windows((height, width), (self.window, self.window), self.shifted,
                                                x.device)
            out = window_attention(q, k, v, (self.window, self.window), self.shifted, self.table,
                                   explicit=self.explicit, plan=self._plans[key])
        return self.proj(out.reshape(batch, height, width, dim))


class Block(nn.Module):
    """A pre-norm transformer block: x + attention(norm(x)), x + MLP(norm(x)), with layer scale."""

    def __init__(self, dim: int, attention: nn.Module, mlp_ratio: float, layer_scale: float | None):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), attention
        self.norm2, self.mlp = nn.LayerNorm(dim), Mlp(dim, mlp_ratio)
        self.gamma1 = nn.Parameter(layer_scale * torch.ones(dim)) if layer_scale else None
        self.gamma2 = nn.Parameter(layer_scale * torch.ones(dim)) if layer_scale else None

    def forward(self, x):
        a, m = self.attn(self.norm1(x)), None
        x = x + (a if self.gamma1 is None else self.gamma1 * a)
        m = self.mlp(self.norm2(x))
        return x + (m if self.gamma2 is None else self.gamma2 * m)


class ConvDownsample(nn.Module):
    """NAT's downsampler: a 3x3 stride-2 convolution doubling the channels, then LayerNorm."""

    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, 3, 2, 1, bias=False)
        self.norm = nn.LayerNorm(2 * dim)

    def forward(self, x):
        return self.norm(self.reduction(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class PatchMerging(nn.Module):
    """Swin's downsampler: each 2x2 patch concatenated (4C), LayerNorm, a linear to 2C."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):
        batch, height, width, dim = x.shape
        if height % 2 or width % 2:
            x = nn.functional.pad(x, (0, 0, 0, width % 2, 0, height % 2))
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class Network(nn.Module):
    """Stem, four stages of blocks with a downsampler between them, and the classifier head."""

    def __init__(self, name: str, stem: nn.Module, stages: list, downsamplers: list, features: int,
                 backend: str):
        super().__init__()
        self.name, self.backend_name = name, backend
        self.stem = stem
        self.stages = nn.ModuleList(nn.Sequential(*blocks) for blocks in stages)
        self.downsamplers = nn.ModuleList(downsamplers)
        self.norm = nn.LayerNorm(features)
        self.head = nn.Linear(features, 1000)

    def forward(self, images):
        x = self.stem(images)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i < len(self.downsamplers):
                x = self.downsamplers[i](x)
        return self.head(self.norm(x).mean(dim=(1, 2)))


class ConvTokenizer(nn.Module):
    """NAT's stem: two 3x3 stride-2 convolutions (3 -> C/2 -> C), then LayerNorm, channels last."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(3, dim // 2, 3, 2, 1), nn.Conv2d(dim // 2, dim, 3, 2, 1))
        self.norm = nn.LayerNorm(dim)

    def forward(self, images):
        return self.norm(self.proj(images).permute(0, 2, 3, 1))


class PatchEmbed(nn.Module):
    """Swin's stem: a 4x4 stride-4 convolution to C, then LayerNorm, channels last."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, 4, 4)
        self.norm = nn.LayerNorm(dim)

    def forward(self, images):
        return self.norm(self.proj(images).permute(0, 2, 3, 1))


# ---- building ----

def _backend(family: str, name: str):
    from natbench.backends import get_backend

    if name == "auto":
        if family == "swin":
            name = "swin"
        else:
            name = "natten" if get_backend("natten").unavailable_reason() is None else "torch"
    backend = get_backend(name)
    wanted = "wsa" if family == "swin" else "na"
    if backend.op != wanted:
        kind = "Swin models run on swin or swin-explicit" if family == "swin" else \
            "NAT and DiNAT models run on a neighborhood-attention backend"
        raise UnsupportedError(f"backend {name} computes {backend.op} attention: {kind}.")
    reason = backend.unavailable_reason()
    if reason:
        raise UnsupportedError(f"backend {name}: {reason}")
    return backend


def create(name: str, backend: str = "auto", image_size: int = 224, rpb: bool | None = None) -> nn.Module:
    """Model `name` (CONFIGS) with its attention on `backend` ("auto": natten where it is built,
    else torch, for NAT and DiNAT; swin for Swin). `image_size` sets DiNAT's dilations (the
    largest that fit each stage's map) and Swin's windows at the last stages (a map smaller than
    the window is one window, unshifted). `rpb`: NA's positional bias, by default where the
    backend has one."""
    if name not in CONFIGS:
        from natbench.errors import SuiteError

        raise SuiteError(f"unknown model {name!r}; models: {', '.join(CONFIGS)}.")
    c = CONFIGS[name]
    attention = _backend(c.family, backend)
    if c.pair:
        return _pair(name, c, attention, image_size, rpb)
    maps = [image_size // 4 // 2 ** s for s in range(4)]
    stages, dim = [], c.dim
    for s, (depth, heads) in enumerate(zip(c.depths, c.heads)):
        blocks = []
        for i in range(depth):
            if c.family == "swin":
                window = min(c.kernel, maps[s])
                layer = WindowAttention(dim, heads, window, shifted=i % 2 == 1 and maps[s] > c.kernel,
                                        explicit=attention.name == "swin-explicit")
            else:
                dilation = max(1, maps[s] // c.kernel) if c.family == "dinat" and i % 2 == 1 else 1
                layer = NeighborhoodAttention(dim, heads, c.kernel, dilation, attention,
                                              rpb=attention.caps.rpb if rpb is None else rpb)
            blocks.append(Block(dim, layer, c.mlp_ratio, c.layer_scale))
        stages.append(blocks)
        dim *= 2
    dims = [c.dim * 2 ** s for s in range(4)]
    if c.family == "swin":
        stem, downsamplers = PatchEmbed(c.dim), [PatchMerging(d) for d in dims[:3]]
    else:
        stem, downsamplers = ConvTokenizer(c.dim), [ConvDownsample(d) for d in dims[:3]]
    return Network(name, stem, stages, downsamplers, dims[-1], attention.name)


class BlockPair(nn.Module):
    """Two blocks on a channels-last [B, map, map, C] feature map."""

    def __init__(self, name: str, blocks: list, backend: str):
        super().__init__()
        self.name, self.backend_name = name, backend
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x):
        return self.blocks(x)


def _pair(name: str, c: Config, attention, side: int, rpb: bool | None) -> BlockPair:
    heads = c.heads[0]
    if c.family == "swin":
        window = min(c.kernel, side)
        layers = [WindowAttention(c.dim, heads, window, shifted=i == 1 and side > c.kernel,
                                  explicit=attention.name == "swin-explicit") for i in range(2)]
    else:
        layers = [NeighborhoodAttention(c.dim, heads, c.kernel, 1, attention,
                                        rpb=attention.caps.rpb if rpb is None else rpb) for _ in range(2)]
    return BlockPair(name, [Block(c.dim, layer, c.mlp_ratio, None) for layer in layers], attention.name)


def pair_label(name: str) -> str:
    """What a block pair's tables name its shape by: its stage, channels and heads."""
    c = CONFIGS[name]
    return f"stage {c.stage}: {c.dim} ch, {c.heads[0]} heads"


def input_shape(name: str, batch: int, image_size: int) -> tuple:
    """A network's images [B, 3, S, S], or a block pair's feature map [B, S, S, C]."""
    c = CONFIGS[name]
    return (batch, image_size, image_size, c.dim) if c.pair else (batch, 3, image_size, image_size)


# ---- measuring (natbench run on a suite of models) ----

def supports(backend, case, machine: bool = True) -> str | None:
    """None when `backend` can run model case `case`, else why not; without `machine`, from the
    family and the declared capabilities only (a plan's question, on any machine)."""
    reason = backend.unavailable_reason() if machine else None
    if reason:
        return reason
    family = CONFIGS[case.model].family
    if (family == "swin") != (backend.op == "wsa"):
        return (f"{case.model} {OTHER_FAMILY} swin or swin-explicit" if family == "swin" else
                f"{case.model} {OTHER_FAMILY} a neighborhood-attention backend")
    caps = backend.caps
    if case.dtype not in caps.dtypes:
        return f"{backend.name} does not run {case.dtype}."
    if case.device not in caps.devices:
        return f"{backend.name} does not run on {case.device}."
    if machine and case.device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device is visible to torch on this machine; use --device cpu."
    if case.needs_backward and case.device not in caps.backward_devices:
        return f"{backend.name} has no backward pass on {case.device}; run --pass fwd."
    return None


def _built(case, backend: str, seed: int, rpb: bool | None = None, dtype=None) -> Network:
    """The case's model on `backend`, its weights drawn from `seed` (the same for every backend
    of the same architecture)."""
    from natbench.dtypes import torch_dtype

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = create(case.model, backend, case.image_size, rpb)
    model = model.to(case.device, dtype or torch_dtype(case.dtype))
    return model.train(case.needs_backward)


def images(case, seed: int) -> torch.Tensor:
    from natbench.dtypes import torch_dtype

    generator = torch.Generator().manual_seed(seed + 1)
    return torch.randn(input_shape(case.model, case.batch, case.image_size), generator=generator).to(
        case.device, torch_dtype(case.dtype))


def bind(case, backend_name: str, seed: int):
    """The case ready to time on the backend (a Bound: the network's forward on the batch,
    its parameters the leaves of a training step), and its row's model fields."""
    from natbench.backends.base import Bound

    model = _built(case, backend_name, seed)
    batch = images(case, seed)
    rpb = any(isinstance(m, NeighborhoodAttention) and m.rpb is not None for m in model.modules())
    fields = {"params": sum(p.numel() for p in model.parameters()),
              "macs": count(case.model, case.image_size, rpb=rpb).macs * case.batch, "rpb": rpb}
    return Bound(fn=lambda: model(batch), leaves=list(model.parameters())), fields


# The dense reference NA holds an [N, N] matrix per head: up to this many tokens in the model's
# largest map it is the oracle; above, the pure-torch NA (itself checked against the reference in
# the backend tests) is, in float64 too.
DENSE_ORACLE_TOKENS = 4096


def _na_oracle(case) -> str:
    c = CONFIGS[case.model]
    side = case.image_size if c.pair else case.image_size // 4
    return "reference" if side * side <= DENSE_ORACLE_TOKENS else "torch"


def check(case, backend_name: str, out: torch.Tensor, rpb: bool, seed: int, cache: dict) -> dict:
    """The first image's output (a network's logits, a pair's features) against the same model
    (same weights, same input) on the oracle in float64: NA's dense reference (the pure-torch NA
    above DENSE_ORACLE_TOKENS), or Swin's explicit softmax. The allowed error is
    the dtype's, or twice the oracle's own error in the case's dtype (half precision)."""
    from natbench.dtypes import tolerance

    oracle = "swin-explicit" if CONFIGS[case.model].family == "swin" else _na_oracle(case)
    key = (case.model, case.image_size, case.dtype, case.device, rpb, seed)
    if key not in cache:
        first = case.with_(batch=1, pass_="fwd")
        image = images(case, seed)[:1]
        with torch.no_grad():
            expected = _built(first, oracle, seed, rpb, torch.float64)(image.double())
            same = None
            if case.dtype in ("bfloat16", "float16"):
                low = _built(first, oracle, seed, rpb)(image)
                same = (low.double() - expected).abs().max().item()
        cache.clear()  # one network's oracle at a time: memory stays bounded
        cache[key] = (expected, tolerance(case.dtype, same))
    expected, allowed = cache[key]
    error = (out.detach()[:1].double() - expected).abs().max().item()
    error = math.inf if math.isnan(error) else error
    return {"max_abs_error": error, "tolerance": allowed, "check": "pass" if error <= allowed else "fail",
            "checked_rows": 1}
