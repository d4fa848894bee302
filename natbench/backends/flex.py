"""flex: neighborhood attention as a FlexAttention block mask, compiled with torch.compile.

The mask_mod computes the window rules of docs/semantics.md per axis in tensor arithmetic; NAT's
RPB is a score_mod reading the bias table (its indices are clamped because FlexAttention also
evaluates score_mod on masked entries of partial blocks).
Block masks are cached per geometry; the compiled kernel is cached by torch.compile per shape.
The first call of a shape compiles: a run makes it before measuring (runner.compile_ahead) and
records its time as the row's `compile_s`.

The mask_mod takes the kernel size as a 0-d tensor it captures, not as a Python int: torch.compile
makes a captured int a constant of the kernel and recompiles for every value (5-6 s each on a
2-core CPU), while a captured tensor is an
input, so one compiled kernel serves every kernel size of a shape (on the CPU its latency matched
the int-specialized kernel's within 2% at K = 3..31). Dilation, stride and the RPB score_mod's
kernel size stay ints: a case with RPB, or a new dilation or stride, still compiles once per value.

torch.compile recompiles flex_attention for every new shape, so this module raises dynamo's
recompile limit and makes hitting it an error: a silent fall-back to the uncompiled path would
report eager times as Flex times.
"""

from __future__ import annotations

import shutil
from functools import lru_cache

import torch

from natbench.backends.base import Backend, Bound, Capabilities, default_scale, heads_first
from natbench.geometry import NAGeometry

_RECOMPILE_LIMIT = 512
_CPU_TOKEN_MULTIPLE = 16


@lru_cache(maxsize=1)
def _compiled_flex():
    from torch.nn.attention.flex_attention import flex_attention

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit,
                                               _RECOMPILE_LIMIT)
    torch._dynamo.config.fail_on_recompile_limit_hit = True
    return torch.compile(flex_attention, dynamic=False)


def _axes(geometry: NAGeometry, kernel_device=None):
    """Per axis: (length, token stride, kernel, dilation, stride, causal), first axis first; the
    kernel a 0-d tensor on `kernel_device` when one is given (see the module's docstring)."""
    axes, token_stride = [], 1
    for length, kernel, *rest in reversed(list(zip(
            geometry.resolution, geometry.kernel_size, geometry.dilation, geometry.stride,
            geometry.is_causal))):
        if kernel_device is not None:
            kernel = torch.tensor(kernel, device=kernel_device)
        axes.append((length, token_stride, kernel, *rest))
        token_stride *= length
    return axes[::-1]


def _window(qa, length, kernel, dilation, stride, causal):
    """The window rules 1-4 of docs/semantics.md as tensor arithmetic on query coordinates `qa`.

    The terms that are constant for dilation 1 or stride 1 are left out in Python, not traced:
    every extra integer op in the mask runs for every element of every partial block, and the
    general form costs 2-3x on the CPU.
    """
    if dilation == 1:
        group, local, group_len = 0, qa, length
    else:
        group, local = qa % dilation, qa // dilation
        group_len = length // dilation + (group < length % dilation).to(qa.dtype)
    if causal:
        leader = local if stride == 1 else _minimum((local // stride) * stride + stride - 1,
                                                    group_len - 1)
        end = local + 1 if stride == 1 else _minimum(local + 1, group_len)
        return group, (leader - kernel + 1).clamp(min=0), end
    leader = local if stride == 1 else _minimum((local // stride) * stride + stride // 2,
                                                group_len - 1)
    first = _minimum((leader - kernel // 2).clamp(min=0), group_len - kernel)
    return group, first, first + kernel


def _minimum(x, bound):
    """min(x, bound) for a tensor x and an int or tensor bound (constants are not traced)."""
    return x.clamp(max=bound) if isinstance(bound, int) else torch.minimum(x, bound)


def _coordinate(flat, length, token_stride, first_axis):
    """An axis coordinate of flat token indices, without the ops that are identities."""
    if token_stride > 1:
        flat = flat // token_stride
    return flat if first_axis else flat % length


def na_mask_mod(geometry: NAGeometry, device):
    axes = _axes(geometry, kernel_device=device)
    tokens = geometry.tokens

    def mask_mod(b, h, q_idx, kv_idx):
        allowed = None
        for axis, (length, token_stride, kernel, dilation, stride, causal) in enumerate(axes):
            qa = _coordinate(q_idx, length, token_stride, axis == 0)
            ka = _coordinate(kv_idx, length, token_stride, axis == 0)
            group, first, end = _window(qa, length, kernel, dilation, stride, causal)
            if dilation == 1:
                inside = (ka >= first) & (ka < end)
            else:
                key = ka // dilation
                inside = (ka % dilation == group) & (key >= first) & (key < end)
            allowed = inside if allowed is None else allowed & inside
        if padded_tokens(tokens, device) == tokens:
            return allowed
        # padded keys are never attended; a padded query attends key 0 (its row is cut off)
        real = q_idx < tokens
        return (real & allowed & (kv_idx < tokens)) | (~real & (kv_idx == 0))

    return mask_mod


def padded_tokens(tokens: int, device) -> int:
    """The sequence length flex runs: on the CPU `tokens` rounded up to a multiple of 16. torch
    2.13's compiled FlexAttention on the CPU computed wrong values or NaN at some lengths that
    are not (40, 72, 88, 104 and 120 tokens of those tried, on an AVX2 CPU, with the NA mask);
    padded to a multiple of 16 they were right. The padding happens in bind, outside timing."""
    return tokens if str(device) != "cpu" else -(-tokens // _CPU_TOKEN_MULTIPLE) * _CPU_TOKEN_MULTIPLE


def _pad(t, tokens: int):
    """[B, heads, N, D] zero-padded to `tokens` along N (the same tensor when N is already)."""
    return t if t.shape[2] == tokens else torch.nn.functional.pad(t, (0, 0, 0, tokens - t.shape[2]))


def _score_mod(case, rpb):
    """The case's score_mod: NAT's RPB, or none."""
    return None if rpb is None else rpb_score_mod(case.geometry, rpb)


def rpb_score_mod(geometry: NAGeometry, rpb):
    axes = _axes(geometry)
    flat = rpb.reshape(rpb.shape[0], -1)

    def score_mod(score, b, h, q_idx, kv_idx):
        index = q_idx * 0
        for axis, (length, token_stride, kernel, dilation, _, _) in enumerate(axes):
            qa = _coordinate(q_idx, length, token_stride, axis == 0)
            ka = _coordinate(kv_idx, length, token_stride, axis == 0)
            offset = (ka // dilation - qa // dilation + kernel - 1).clamp(0, 2 * kernel - 2)
            index = index * (2 * kernel - 1) + offset
        return score + flat[h, index].to(score.dtype)

    return score_mod


@lru_cache(maxsize=16)
def block_mask(geometry: NAGeometry, device: str):
    from torch.nn.attention.flex_attention import create_block_mask

    n = padded_tokens(geometry.tokens, device)
    return create_block_mask(na_mask_mod(geometry, device), None, None, n, n, device=device,
                             _compile=True)


class FlexBackend(Backend):
    name = "flex"
    summary = ("NA as a FlexAttention block mask (RPB as a score_mod), compiled with "
               "torch.compile; compile time reported apart.")
    caps = Capabilities(dtypes=frozenset({"float32", "bfloat16", "float16"}),
                        backward_devices=frozenset({"cuda"}))
    layout = "[B, heads, N, D]"
    compiles = True

    def unavailable_reason(self):
        try:
            import torch.nn.attention.flex_attention  # noqa: F401
        except ImportError as error:
            return f"this torch {torch.__version__} has no FlexAttention ({error}); use torch >= 2.5."
        if shutil.which("c++") is None and shutil.which("g++") is None:
            return "torch.compile needs a C++ compiler on the CPU and none is on PATH; install g++."
        return None

    def supports_extra(self, case):
        if case.device == "cpu" and case.dtype == "float64":
            return "FlexAttention on the CPU runs float32, bfloat16 and float16 only."
        return None

    def _run(self, qh, kh, vh, case, score_mod, scale):
        return _compiled_flex()(qh, kh, vh, score_mod=score_mod,
                                block_mask=block_mask(case.geometry, str(qh.device)),
                                scale=default_scale(qh.shape[-1], scale))

    def forward(self, q, k, v, case, rpb=None, scale=None):
        tokens = padded_tokens(case.tokens, q.device)
        out = self._run(*(_pad(heads_first(t), tokens) for t in (q, k, v)), case,
                        _score_mod(case, rpb), scale)
        return _public(out, case, q, v)

    def bind(self, case, q, k, v, rpb=None, scale=None):
        tokens = padded_tokens(case.tokens, q.device)
        qh, kh, vh = (_pad(heads_first(t), tokens).contiguous().detach().requires_grad_(t.requires_grad)
                      for t in (q, k, v))
        block_mask(case.geometry, str(q.device))  # built outside timing, like the score_mod
        score_mod = _score_mod(case, rpb)
        return Bound(fn=lambda: self._run(qh, kh, vh, case, score_mod, scale),
                     unpack=lambda out: _public(out, case, q, v),
                     leaves=[t for t in (qh, kh, vh, rpb) if t is not None])


def _public(out, case, q, v):
    """flex's [B, heads, padded N, D] output in the public layout, padded rows cut off."""
    return out[:, :, :case.tokens].transpose(1, 2).reshape(*q.shape[:-1], v.shape[-1])
