"""The public functional operators: na1d / na2d / na3d and wsa2d."""

from __future__ import annotations

from natbench.backends import AUTO_ORDER, get_backend
from natbench.case import Case
from natbench.dtypes import dtype_name
from natbench.errors import InvalidProblemError, UnsupportedError

_RANK_NAMES = {1: "[B, L, heads, D]", 2: "[B, H, W, heads, D]", 3: "[B, T, H, W, heads, D]"}


def _check_inputs(rank: int, q, k, v, function: str) -> None:
    if q.dim() != rank + 3:
        raise InvalidProblemError(
            f"{function} expects q of {rank + 3} dims {_RANK_NAMES[rank]}, got shape {tuple(q.shape)}."
        )
    if k.shape != q.shape:
        raise InvalidProblemError(f"k has shape {tuple(k.shape)} but q has {tuple(q.shape)}; "
                                  f"they must match.")
    if v.shape[:-1] != q.shape[:-1]:
        raise InvalidProblemError(f"v has shape {tuple(v.shape)}; all but its last dim must "
                                  f"match q's {tuple(q.shape)}.")
    if not (q.dtype == k.dtype == v.dtype and q.device == k.device == v.device):
        raise InvalidProblemError("q, k and v must share one dtype and one device.")


def _case(rank, q, kernel_size, dilation, stride, is_causal, rpb, needs_grad) -> Case:
    batch, *spatial, heads, head_dim = q.shape
    case = Case.build(rank, batch, heads, head_dim, tuple(spatial), kernel_size, dilation, stride,
                      is_causal, rpb is not None, dtype_name(q.dtype), q.device.type,
                      "fwdbwd" if needs_grad else "fwd")
    case.validate()
    return case


def _choose(case: Case, backend: str):
    names = AUTO_ORDER if backend == "auto" else (backend,)
    reasons = []
    for name in names:
        chosen = get_backend(name)
        if chosen.op != "na":
            raise UnsupportedError(f"backend {name!r} computes {chosen.op} attention, not "
                                   f"neighborhood attention; use one of {', '.join(AUTO_ORDER)}.")
        reason = chosen.supports(case)
        if reason is None:
            return chosen
        reasons.append(f"{name}: {reason}")
    raise UnsupportedError("no backend can run this call: " + " ".join(reasons))


def _na(rank, q, k, v, kernel_size, dilation, stride, is_causal, rpb, scale, backend):
    _check_inputs(rank, q, k, v, f"na{rank}d")
    needs_grad = any(t is not None and t.requires_grad for t in (q, k, v, rpb))
    case = _case(rank, q, kernel_size, dilation, stride, is_causal, rpb, needs_grad)
    if rpb is not None:
        expected = (case.heads, *(2 * k_ - 1 for k_ in case.kernel_size))
        if tuple(rpb.shape) != expected:
            raise InvalidProblemError(f"rpb has shape {tuple(rpb.shape)}; expected {expected} "
                                      f"([heads, 2K-1 per axis]).")
    return _choose(case, backend).forward(q, k, v, case, rpb, scale)


def na1d(q, k, v, kernel_size, dilation=1, stride=1, is_causal=False, rpb=None, scale=None,
         backend="auto"):
    """1-D neighborhood attention; q, k, v: [B, L, heads, D]. See docs/semantics.md."""
    return _na(1, q, k, v, kernel_size, dilation, stride, is_causal, rpb, scale, backend)


def na2d(q, k, v, kernel_size, dilation=1, stride=1, is_causal=False, rpb=None, scale=None,
         backend="auto"):
    """2-D neighborhood attention; q, k, v: [B, H, W, heads, D]; rpb: [heads, 2K0-1, 2K1-1]."""
    return _na(2, q, k, v, kernel_size, dilation, stride, is_causal, rpb, scale, backend)


def na3d(q, k, v, kernel_size, dilation=1, stride=1, is_causal=False, rpb=None, scale=None,
         backend="auto"):
    """3-D neighborhood attention; q, k, v: [B, T, H, W, heads, D]."""
    return _na(3, q, k, v, kernel_size, dilation, stride, is_causal, rpb, scale, backend)


def wsa2d(q, k, v, window_size, shifted=False, rpb=None, scale=None, backend="swin"):
    """Swin window attention (shifted=True: SWSA); q, k, v: [B, H, W, heads, D].

    `rpb` is Swin's bias table [(2w0-1) * (2w1-1), heads]. Backends: swin, swin-explicit,
    reference.
    """
    from natbench.backends import reference, swin

    _check_inputs(2, q, k, v, "wsa2d")
    window = Case.build(2, 1, 1, 1, tuple(q.shape[1:3]), window_size).kernel_size
    for axis, (w, length) in enumerate(zip(window, q.shape[1:3])):
        if w < 1:
            raise InvalidProblemError(f"axis {axis}: window_size {w} < 1; use a window of 1 or more.")
    if rpb is not None:
        expected = ((2 * window[0] - 1) * (2 * window[1] - 1), q.shape[-2])
        if tuple(rpb.shape) != expected:
            raise InvalidProblemError(f"rpb has shape {tuple(rpb.shape)}; expected {expected} "
                                      f"(Swin's [(2w0-1)*(2w1-1), heads]).")
    if backend == "reference":
        return reference.window(q, k, v, window, shifted, rpb, scale)
    if backend not in ("swin", "swin-explicit"):
        raise UnsupportedError(f"wsa2d runs on swin, swin-explicit or reference, not {backend!r}.")
    return swin.window_attention(q, k, v, window, shifted, rpb, scale, backend == "swin-explicit")
