"""What every backend is: a declaration of what it supports, and how to run a case."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from natbench.case import Case
from natbench.dtypes import DTYPES

ALL_DTYPES = frozenset(DTYPES)
ALL_RANKS = frozenset({1, 2, 3})
ALL_DEVICES = frozenset({"cpu", "cuda"})


@dataclass(frozen=True)
class Capabilities:
    """The features a backend declares; `Backend.supports` turns a missing one into a sentence."""

    ranks: frozenset = ALL_RANKS
    dtypes: frozenset = ALL_DTYPES
    devices: frozenset = ALL_DEVICES
    dilation: bool = True
    causal: bool = True
    stride: bool = True
    even_kernel: bool = True
    rpb: bool = True
    backward_devices: frozenset = ALL_DEVICES


@dataclass
class Bound:
    """A case bound to one backend, ready to time.

    `fn()` runs the operator on inputs already in the backend's own layout (conversion happened
    in `bind`, outside any timed region); `unpack(out)` turns its output back into the public
    heads-last layout for the correctness check; `leaves` are the tensors whose gradients a
    backward pass produces.
    """

    fn: Callable[[], Any]
    unpack: Callable[[Any], Any] = lambda out: out
    leaves: list = field(default_factory=list)


def _axis_list(values) -> str:
    return ", ".join(str(v) for v in values)


class Backend:
    """Base class. Subclasses set the class attributes and implement `forward` (and maybe `bind`).

    `op` says what the backend computes for a case: "na" (neighborhood attention),
    "wsa" (Swin window attention, window = the case's kernel_size) or "full" (global attention).
    """

    name: ClassVar[str]
    op: ClassVar[str] = "na"
    summary: ClassVar[str]
    caps: ClassVar[Capabilities] = Capabilities()
    layout: ClassVar[str] = "[B, *spatial, heads, D] (the public layout)"
    # True when a case's first call compiles code (torch.compile): a run makes those calls before
    # it measures, while the extension builds (runner.compile_ahead).
    compiles: ClassVar[bool] = False
    # True when the backend runs natbench's compiled extension (csrc/): light commands then read
    # the extension's build stamp instead of building it (extension.status).
    needs_extension: ClassVar[bool] = False

    def unavailable_reason(self) -> str | None:
        """None when the backend can run on this machine at all, else a sentence saying why not."""
        return None

    def description(self) -> str:
        return self.summary

    def supports(self, case: Case) -> str | None:
        """None if this backend can run `case` on this machine, else a sentence a person understands."""
        reason = self.unavailable_reason()
        if reason:
            return reason
        return self.capability_reason(case, machine=True) or self.supports_extra(case)

    def capability_reason(self, case: Case, machine: bool = False) -> str | None:
        """Why the declared capabilities rule `case` out (None: they do not); with `machine`,
        also a CUDA case where torch sees no GPU. Without it, what a plan made on a machine
        without the GPU or the build can say."""
        caps, name = self.caps, self.name
        if case.rank not in caps.ranks:
            return f"{name} runs {_axis_list(sorted(caps.ranks))}-D problems only; this case is {case.rank}-D."
        if case.dtype not in caps.dtypes:
            return f"{name} does not run {case.dtype}; it runs {_axis_list(sorted(caps.dtypes))}."
        if case.device not in caps.devices:
            return f"{name} does not run on {case.device}."
        if machine and case.device == "cuda" and not _cuda_available():
            return "no CUDA device is visible to torch on this machine; use --device cpu."
        if case.needs_backward and case.device not in caps.backward_devices:
            return (f"{name} has no backward pass on {case.device}; run --pass fwd"
                    + (" or use --device cuda." if "cuda" in caps.backward_devices else "."))
        if not caps.dilation and any(d != 1 for d in case.dilation):
            return f"{name} has no dilation; this case has dilation {case.dilation}."
        if not caps.causal and any(case.is_causal):
            return f"{name} has no causal masking; this case is causal on axes {case.is_causal}."
        if not caps.stride and any(s != 1 for s in case.stride):
            return f"{name} has no stride; this case has stride {case.stride}."
        if not caps.even_kernel and any(k % 2 == 0 for k in case.kernel_size):
            return f"{name} needs odd kernel sizes; this case has {case.kernel_size}."
        if case.rpb and not caps.rpb:
            return f"{name} has no relative positional bias; drop rpb for this backend."
        return None

    def supports_extra(self, case: Case) -> str | None:
        """Backend-specific limits beyond the declared capabilities."""
        return None

    def forward(self, q, k, v, case: Case, rpb=None, scale: float | None = None):
        """Run the operator on public-layout tensors and return a public-layout output."""
        raise NotImplementedError

    def bind(self, case: Case, q, k, v, rpb=None, scale: float | None = None) -> Bound:
        """Prepare `case` for timing. The default runs `forward` on the public layout."""
        return Bound(fn=lambda: self.forward(q, k, v, case, rpb, scale),
                     leaves=[t for t in (q, k, v, rpb) if t is not None])


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def heads_first(t):
    """[B, *spatial, heads, D] -> [B, heads, N, D] (a view)."""
    batch, *spatial, heads, dim = t.shape
    return t.reshape(batch, -1, heads, dim).transpose(1, 2)


def default_scale(head_dim: int, scale: float | None) -> float:
    return head_dim ** -0.5 if scale is None else float(scale)
