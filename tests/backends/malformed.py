"""Malformed inputs for every op of torch.ops.natbench, as a user calling them directly could pass.

    python -m tests.backends.malformed [--device cpu|cuda] [--examples N] [--json FILE]

For each op and each way of breaking its inputs (MUTATIONS), hypothesis draws valid problems
(rank, lengths, kernel, dilation, stride, causal, batch, heads, head dims, dtype, bias), breaks
one input and calls the op. The properties:
- a broken input is refused: a RuntimeError that names the op (the op boundary's message), or the
  TypeError of torch's schema for a value of the wrong kind;
- a valid input with other strides (a transposed or expanded view) is accepted and gives what its
  contiguous copy gives.
It runs in a child process of the tests (tests/backends/test_op_boundary.py) and of `make
sanitize`, so that a crash, or an out-of-bounds access that AddressSanitizer catches, ends this
process and not the test run. Exit status: 0 when every property held, 1 when one did not.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field, replace

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

DTYPES = {"cpu": (torch.float32, torch.float64, torch.bfloat16, torch.float16),
          "cuda": (torch.float32, torch.bfloat16, torch.float16)}

# Each op's arguments, in its schema's order; "geometry" is kernel_size, dilation, stride, is_causal.
OPS = {
    "na_fused_forward": ("q", "k", "v", "rpb", "geometry", "scale"),
    "na_fused_backward": ("q", "k", "v", "rpb", "out", "lse", "dout", "geometry", "scale"),
    "na_qk_rpb": ("q", "k", "rpb", "geometry", "scale"),
    "na_qk_rpb_backward": ("q", "k", "d_logits", "has_rpb", "geometry", "scale"),
    "na_av": ("attn", "v", "geometry"),
    "na_av_backward": ("attn", "v", "dout", "geometry"),
}


@dataclass
class Problem:
    """One valid call's sizes: lengths, kernel, dilation, stride and causal per spatial axis."""
    lengths: list
    kernel: list
    dilation: list
    stride: list
    causal: list
    batch: int
    heads: int
    dim: int
    dim_v: int
    dtype: torch.dtype
    rpb: bool
    axis: int = 0  # the axis a geometry mutation breaks
    tensors: dict = field(default_factory=dict)

    @property
    def tokens(self) -> int:
        return math.prod(self.lengths)

    @property
    def window_keys(self) -> int:
        return math.prod(self.kernel)


@st.composite
def problems(draw, device: str) -> Problem:
    rank = draw(st.integers(1, 3))
    lengths = [draw(st.integers(1, 7 if rank < 3 else 4)) for _ in range(rank)]
    kernel, dilation, stride, causal = [], [], [], []
    for length in lengths:
        k = draw(st.integers(1, length))
        kernel.append(k)
        dilation.append(draw(st.integers(1, length // k)))
        stride.append(draw(st.integers(1, k)))
        causal.append(draw(st.booleans()))
    return Problem(lengths, kernel, dilation, stride, causal, batch=draw(st.integers(1, 2)),
                   heads=draw(st.integers(1, 3)), dim=draw(st.integers(1, 9)),
                   dim_v=draw(st.integers(1, 9)), dtype=draw(st.sampled_from(DTYPES[device])),
                   rpb=draw(st.booleans()), axis=draw(st.integers(0, rank - 1)))


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def valid_tensors(p: Problem, device: str, seed: int) -> dict:
    """Every tensor argument of every op, valid for p."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, dtype=p.dtype):
        return torch.randn(*shape, generator=g).to(device, dtype)

    spatial = tuple(p.lengths)
    attention = (p.batch, p.heads, p.tokens, p.window_keys)
    return {
        "q": randn(p.batch, *spatial, p.heads, p.dim),
        "k": randn(p.batch, *spatial, p.heads, p.dim),
        "v": randn(p.batch, *spatial, p.heads, p.dim_v),
        "rpb": randn(p.heads, *(2 * k - 1 for k in p.kernel)) if p.rpb else None,
        "out": randn(p.batch, *spatial, p.heads, p.dim_v),
        "lse": randn(p.batch, p.heads, p.tokens, dtype=acc_dtype(p.dtype)),
        "dout": randn(p.batch, *spatial, p.heads, p.dim_v),
        "d_logits": randn(*attention),
        "attn": torch.softmax(randn(*attention, dtype=torch.float32), -1).to(p.dtype),
    }


def arguments(op: str, p: Problem) -> list:
    values = {**p.tensors, "has_rpb": p.rpb, "scale": 0.5,
              "geometry": (list(p.kernel), list(p.dilation), list(p.stride), list(p.causal))}
    args = []
    for name in OPS[op]:
        args.extend(values[name] if name == "geometry" else [values[name]])
    return args


# ---- mutations: (the argument it breaks, the change) ----

def _resized(t: torch.Tensor, dim: int, delta: int) -> torch.Tensor:
    """Zeros of t's shape with dim `delta` longer (one longer where shorter would be empty)."""
    shape = list(t.shape)
    shape[dim] = shape[dim] + delta if shape[dim] + delta >= 1 else shape[dim] + 1
    return torch.zeros(shape, dtype=t.dtype, device=t.device)


def _other_dtype(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float16 if t.dtype != torch.float16 else torch.float32)


def _tensor(name, change):
    def apply(p: Problem) -> Problem:
        tensors = dict(p.tensors)
        tensors[name] = change(tensors[name], p)
        return replace(p, tensors=tensors)
    return name, apply


def _geometry(name, change):
    def apply(p: Problem) -> Problem:
        return change(replace(p, kernel=list(p.kernel), dilation=list(p.dilation),
                              stride=list(p.stride), causal=list(p.causal)))
    return "geometry", apply


def _set(field_name, value):
    def change(p: Problem) -> Problem:
        getattr(p, field_name)[p.axis] = value(p) if callable(value) else value
        return p
    return change


def _lengthen(field_name):
    def change(p: Problem) -> Problem:
        values = getattr(p, field_name)
        values.append(values[-1])
        return p
    return change


def _shorten(field_name):
    def change(p: Problem) -> Problem:
        values = getattr(p, field_name)
        del values[-1]
        return p
    return change


def _bias(change):
    """A broken rpb, added where the valid problem had none."""
    def apply(p: Problem) -> Problem:
        tensors = dict(p.tensors)
        table = tensors["rpb"]
        if table is None:
            table = torch.zeros(p.heads, *(2 * k - 1 for k in p.kernel), dtype=p.dtype,
                                device=p.tensors["q"].device)
        tensors["rpb"] = change(table, p)
        return replace(p, tensors=tensors, rpb=True)
    return "rpb", apply


MUTATIONS = {
    # the bias table: too small, too large, of other heads, missing an axis, the wrong dtype
    "rpb smaller than 2K-1": _bias(lambda t, p: _resized(t, 1 + p.axis, -1)),
    "rpb larger than 2K-1": _bias(lambda t, p: _resized(t, 1 + p.axis, +1)),
    "rpb 2x2 for any K": _bias(lambda t, p: torch.zeros(p.heads, *([2] * len(p.kernel)), dtype=t.dtype,
                                                         device=t.device)),  # 2K-1 is odd
    "rpb of fewer heads": _bias(lambda t, p: _resized(t, 0, -1)),
    "rpb of more heads": _bias(lambda t, p: _resized(t, 0, +1)),
    "rpb flattened": _bias(lambda t, p: t.reshape(t.shape[0], -1) if t.dim() > 2 else t.reshape(-1)),
    "rpb of another dtype": _bias(lambda t, p: _other_dtype(t)),
    # the geometry against the axes
    "kernel longer than its axis": _geometry("kernel", _set("kernel", lambda p: p.lengths[p.axis] + 1)),
    "kernel x dilation longer than its axis": _geometry(
        "dilation", _set("dilation", lambda p: p.lengths[p.axis] // p.kernel[p.axis] + 1)),
    "kernel 0": _geometry("kernel", _set("kernel", 0)),
    "kernel negative": _geometry("kernel", _set("kernel", -3)),
    "kernel 2^62": _geometry("kernel", _set("kernel", 2 ** 62)),
    "dilation 0": _geometry("dilation", _set("dilation", 0)),
    "dilation 2^62": _geometry("dilation", _set("dilation", 2 ** 62)),
    "stride 0": _geometry("stride", _set("stride", 0)),
    "stride above kernel": _geometry("stride", _set("stride", lambda p: p.kernel[p.axis] + 1)),
    "kernel_size list too long": _geometry("kernel", _lengthen("kernel")),
    "kernel_size list too short": _geometry("kernel", _shorten("kernel")),
    "dilation list too long": _geometry("dilation", _lengthen("dilation")),
    "stride list too short": _geometry("stride", _shorten("stride")),
    "is_causal list too long": _geometry("causal", _lengthen("causal")),
    # q, k, v and the others against each other
    "q of 3 dims": _tensor("q", lambda t, p: t.reshape(t.shape[0], -1, t.shape[-1])),
    "q of 7 dims": _tensor("q", lambda t, p: t.reshape(1, 1, 1, 1, 1, 1, -1) if t.dim() < 7 else t),
    "q with an empty dim": _tensor("q", lambda t, p: t[..., :0]),
    "q of integers": _tensor("q", lambda t, p: t.to(torch.int32)),
    "k of another batch": _tensor("k", lambda t, p: _resized(t, 0, +1)),
    "k of other heads": _tensor("k", lambda t, p: _resized(t, -2, -1)),
    "k of another length": _tensor("k", lambda t, p: _resized(t, 1 + p.axis, -1)),
    "k of another head dim": _tensor("k", lambda t, p: _resized(t, -1, +1)),
    "k of another dtype": _tensor("k", lambda t, p: _other_dtype(t)),
    "v of another batch": _tensor("v", lambda t, p: _resized(t, 0, +1)),
    "v of other heads": _tensor("v", lambda t, p: _resized(t, -2, +1)),
    "v of another length": _tensor("v", lambda t, p: _resized(t, 1 + p.axis, +1)),
    "v of another rank": _tensor("v", lambda t, p: t.reshape(t.shape[0], -1, *t.shape[-2:]) if t.dim() > 4
                                 else t.unsqueeze(1)),
    "v with an empty head dim": _tensor("v", lambda t, p: t[..., :0]),
    "v of another dtype": _tensor("v", lambda t, p: _other_dtype(t)),
    "out of another shape": _tensor("out", lambda t, p: _resized(t, -1, +1)),
    "dout of another shape": _tensor("dout", lambda t, p: _resized(t, 1 + p.axis, -1)),
    "dout of another dtype": _tensor("dout", lambda t, p: _other_dtype(t)),
    "lse of another shape": _tensor("lse", lambda t, p: _resized(t, 2, -1)),
    "lse of fewer heads": _tensor("lse", lambda t, p: _resized(t, 1, -1)),
    "lse of the input dtype": _tensor("lse", lambda t, p: t.to(torch.float16)),
    "d_logits of fewer keys": _tensor("d_logits", lambda t, p: _resized(t, 3, -1)),
    "d_logits of another batch": _tensor("d_logits", lambda t, p: _resized(t, 0, +1)),
    "d_logits of other heads": _tensor("d_logits", lambda t, p: _resized(t, 1, +1)),
    "attn of another batch": _tensor("attn", lambda t, p: _resized(t, 0, +1)),
    "attn of other heads": _tensor("attn", lambda t, p: _resized(t, 1, -1)),
    "attn of fewer tokens": _tensor("attn", lambda t, p: _resized(t, 2, -1)),
    "attn of more keys": _tensor("attn", lambda t, p: _resized(t, 3, +1)),
    "attn of another dtype": _tensor("attn", lambda t, p: _other_dtype(t)),
}


def _device_mutation(device: str):
    """One input on another device than the rest: the CPU beside CUDA, CUDA beside the CPU."""
    other = "cpu" if device == "cuda" else ("cuda" if torch.cuda.is_available() else None)
    if other is None:
        return {}
    return {"k on another device": _tensor("k", lambda t, p: t.to(other)),
            "rpb on another device": _bias(lambda t, p: t.to(other))}


def _other_strides(t: torch.Tensor) -> torch.Tensor:
    """The same values in another layout: a transposed copy seen through the transpose (of the
    first two dims, or of the last two where the first is a single row)."""
    a, b = (0, 1) if t.shape[0] > 1 else (-2, -1)
    return t.transpose(a, b).contiguous().transpose(a, b)


def applies(op: str, argument: str) -> bool:
    return argument in OPS[op]


def refused(op: str, error: Exception) -> bool:
    """The op boundary's refusal names the op; torch's schema refuses values of the wrong kind."""
    if isinstance(error, TypeError):
        return True
    return isinstance(error, (RuntimeError, ValueError)) and op in str(error)


@dataclass
class Tally:
    calls: dict = field(default_factory=dict)  # "op: mutation" -> calls made
    violations: list = field(default_factory=list)

    def count(self, key: str) -> None:
        self.calls[key] = self.calls.get(key, 0) + 1


def check_mutation(ops, op: str, label: str, mutation, device: str, examples: int, tally: Tally) -> None:
    argument, change = mutation
    if not applies(op, argument):
        return

    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(problems(device), st.integers(0, 2 ** 16))
    def property_(p: Problem, seed: int):
        p = replace(p, tensors=valid_tensors(p, device, seed))
        broken = change(p)
        tally.count(f"{op}: {label}")
        try:
            getattr(ops, op)(*arguments(op, broken))
        except Exception as error:  # the property is about which exceptions, checked below
            if not refused(op, error):
                tally.violations.append(f"{op}: {label}: {type(error).__name__}: {str(error)[:300]}")
            return
        tally.violations.append(f"{op}: {label}: accepted {problem_text(broken)}")

    property_()


def check_strides(ops, op: str, device: str, examples: int, tally: Tally) -> None:
    @settings(max_examples=examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(problems(device), st.integers(0, 2 ** 16))
    def property_(p: Problem, seed: int):
        p = replace(p, tensors=valid_tensors(p, device, seed))
        strided = replace(p, tensors={name: None if t is None else _other_strides(t)
                                      for name, t in p.tensors.items()})
        tally.count(f"{op}: valid, other strides")
        try:
            expected = getattr(ops, op)(*arguments(op, p))
            got = getattr(ops, op)(*arguments(op, strided))
        except Exception as error:  # a valid call that raises is the violation
            tally.violations.append(f"{op}: valid call refused: {type(error).__name__}: {str(error)[:300]} "
                                    f"{problem_text(p)}")
            return
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = got if isinstance(got, tuple) else (got,)
        for a, b in zip(expected, got):
            if a is not None and not torch.allclose(a.float(), b.float(), atol=1e-2, rtol=1e-2, equal_nan=True):
                tally.violations.append(f"{op}: other strides changed the result {problem_text(p)}")
                return

    property_()


def problem_text(p: Problem) -> str:
    shapes = {name: None if t is None else tuple(t.shape) for name, t in p.tensors.items()}
    return (f"(lengths {p.lengths}, kernel {p.kernel}, dilation {p.dilation}, stride {p.stride}, "
            f"causal {p.causal}, {p.dtype}, shapes {shapes})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--examples", type=int, default=8, help="Problems drawn per op and mutation.")
    parser.add_argument("--json", help="Write the tally here as JSON.")
    args = parser.parse_args(argv)
    from natbench.backends.natten import _ops

    ops = _ops()
    tally = Tally()
    mutations = {**MUTATIONS, **_device_mutation(args.device)}
    for op in OPS:
        for label, mutation in mutations.items():
            check_mutation(ops, op, label, mutation, args.device, args.examples, tally)
        check_strides(ops, op, args.device, args.examples, tally)
    record = {"device": args.device, "examples": args.examples, "calls": tally.calls,
              "violations": tally.violations}
    if args.json:
        with open(args.json, "w") as file:
            json.dump(record, file, indent=1)
    print(f"{sum(tally.calls.values())} calls over {len(tally.calls)} op x input kinds on {args.device}; "
          f"{len(tally.violations)} violations")
    for line in tally.violations[:40]:
        print("  " + line)
    return 1 if tally.violations else 0


if __name__ == "__main__":
    sys.exit(main())
