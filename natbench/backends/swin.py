"""swin and swin-explicit: Swin window attention (WSA) and shifted window attention (SWSA).

Any rank, though Swin itself is 2-D. The map is padded at the end to a multiple of the window
(padded keys are masked for real queries), optionally rolled by -floor(w/2) per axis with Swin's
region mask, split into windows, attended, and put back. `swin` runs the windows through
scaled_dot_product_attention (what one would pick today); `swin-explicit` runs the explicit
softmax(QK^T + B)V that the Swin paper ran. Bias tables use Swin's layout [prod(2w-1), heads],
indexed by the mixed-radix (query - key) offset inside the window.

In a benchmark the padding, roll and window split happen in `bind`, outside the timed region: the
timed work is the attention over windows, Swin's best case.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import torch
import torch.nn.functional as F

from natbench.backends.base import Backend, Bound, Capabilities, default_scale


@dataclass(frozen=True)
class WindowPlan:
    """How a map of `spatial` is cut into windows, and the masks that cutting needs."""

    spatial: tuple[int, ...]
    window: tuple[int, ...]
    shift: tuple[int, ...]
    key_mask: torch.Tensor | None  # [nW, P, P] bool, True = may attend; None = attend all
    bias_index: torch.Tensor  # [P, P] index into a [prod(2w-1), heads] table

    @property
    def padded(self) -> tuple[int, ...]:
        return tuple(-(-n // w) * w for n, w in zip(self.spatial, self.window))


def plan_windows(spatial, window, shifted: bool, device="cpu") -> WindowPlan:
    """Masks for padding and for Swin's regions, built on the padded (and rolled) grid."""
    window = tuple(int(w) for w in window)
    padded = tuple(-(-n // w) * w for n, w in zip(spatial, window))
    shift = tuple(w // 2 if shifted else 0 for w in window)
    labels, real = torch.zeros(padded, dtype=torch.long), torch.ones(padded, dtype=torch.bool)
    for axis, (n, p, w, s) in enumerate(zip(spatial, padded, window, shift)):
        pos = torch.arange(p)
        region = torch.zeros(p, dtype=torch.long)
        if s:
            region = (pos >= p - w).long() + (pos >= p - s).long()
        view = [1] * len(padded)
        view[axis] = p
        labels = labels * 3 + region.view(view)
        real = real & (((pos + s) % p) < n).view(view)  # rolled position -> original index
    labels, real = partition(labels[None, ..., None, None], window)[0, :, 0, :, 0], \
        partition(real[None, ..., None, None], window)[0, :, 0, :, 0]
    needs_mask = bool((labels != labels[:, :1]).any()) or not bool(real.all())
    key_mask = None
    if needs_mask:
        same = labels[:, :, None] == labels[:, None, :]
        key_mask = (same & (real[:, None, :] | ~real[:, :, None])).to(device)
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij"))
    coords = coords.reshape(len(window), -1)
    index = torch.zeros(coords.shape[1], coords.shape[1], dtype=torch.long)
    for axis, w in enumerate(window):
        index = index * (2 * w - 1) + (coords[axis][:, None] - coords[axis][None, :] + w - 1)
    return WindowPlan(tuple(spatial), window, shift, key_mask, index.to(device))


def partition(x, window):
    """[B, *padded, h, D] -> [B, nW, h, P, D]: windows in row-major order, P = prod(window)."""
    batch, *spatial, heads, dim = x.shape
    rank = len(spatial)
    split = [batch]
    for n, w in zip(spatial, window):
        split += [n // w, w]
    x = x.reshape(*split, heads, dim)
    order = [0, *range(1, 2 * rank, 2), 2 * rank + 1, *range(2, 2 * rank + 1, 2), 2 * rank + 2]
    return x.permute(order).reshape(batch, -1, heads, prod(window), dim)


def unpartition(x, plan: WindowPlan):
    """Inverse of `partition`: [B, nW, h, P, D] -> [B, *padded, h, D]."""
    batch, _, heads, _, dim = x.shape
    rank = len(plan.window)
    counts = [p // w for p, w in zip(plan.padded, plan.window)]
    x = x.reshape(batch, *counts, heads, *plan.window, dim)
    order = [0]
    for axis in range(rank):
        order += [1 + axis, rank + 2 + axis]
    order += [rank + 1, 2 * rank + 2]
    return x.permute(order).reshape(batch, *plan.padded, heads, dim)


def to_windows(x, plan: WindowPlan):
    """Pad at the end, roll by -shift, cut into windows."""
    rank = len(plan.spatial)
    pads = [0, 0, 0, 0]
    for n, p in reversed(list(zip(plan.spatial, plan.padded))):
        pads += [0, p - n]
    x = F.pad(x, pads[: 4 + 2 * rank]) if plan.padded != plan.spatial else x
    if any(plan.shift):
        x = torch.roll(x, shifts=[-s for s in plan.shift], dims=list(range(1, rank + 1)))
    return partition(x, plan.window)


def from_windows(x, plan: WindowPlan):
    """Inverse of `to_windows`: join windows, roll back, crop the padding."""
    rank = len(plan.spatial)
    x = unpartition(x, plan)
    if any(plan.shift):
        x = torch.roll(x, shifts=list(plan.shift), dims=list(range(1, rank + 1)))
    return x[(slice(None), *[slice(0, n) for n in plan.spatial])]


def attend_windows(qw, kw, vw, plan: WindowPlan, table=None, scale=None, explicit=False):
    """Attention inside each window; qw, kw, vw are [B, nW, h, P, D]."""
    scale = default_scale(qw.shape[-1], scale)
    mask = None if plan.key_mask is None else plan.key_mask[:, None]  # [nW, 1, P, P]
    if table is not None:
        bias = table[plan.bias_index].permute(2, 0, 1).to(qw.dtype)  # [h, P, P]
        mask = bias if mask is None else bias.masked_fill(~mask, float("-inf"))
    if not explicit:
        return F.scaled_dot_product_attention(qw, kw, vw, attn_mask=mask, scale=scale)
    logits = (qw * scale) @ kw.transpose(-1, -2)
    if mask is not None:
        logits = logits + mask if mask.dtype != torch.bool else logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1) @ vw


def window_attention(q, k, v, window, shifted=False, table=None, scale=None, explicit=False, plan=None):
    """(S)WSA on public-layout tensors; `table` is Swin's [prod(2w-1), heads] bias table; `plan`
    the map's window plan when the caller keeps one."""
    if plan is None:
        plan = plan_windows(q.shape[1:-2], window, shifted, q.device)
    qw, kw, vw = (to_windows(t, plan) for t in (q, k, v))
    return from_windows(attend_windows(qw, kw, vw, plan, table, scale, explicit), plan)


def swin_table_from_rpb(rpb):
    """NAT's [heads, 2K-1, ...] table (key - query offsets) as Swin's [prod(2K-1), heads] table.

    Swin indexes by query - key offsets, so the same bias is the NAT table flipped on every axis.
    """
    heads = rpb.shape[0]
    return rpb.flip(list(range(1, rpb.dim()))).reshape(heads, -1).transpose(0, 1)


class SwinBackend(Backend):
    name = "swin"
    op = "wsa"
    explicit = False
    summary = ("Swin window attention with window = kernel_size (equal keys per query), "
               "scaled_dot_product_attention over the windows; window split outside timing.")
    caps = Capabilities(dilation=False, causal=False, stride=False)
    layout = "[B, windows, heads, window tokens, D] (padded, split into windows)"

    def forward(self, q, k, v, case, rpb=None, scale=None):
        table = None if rpb is None else swin_table_from_rpb(rpb)
        return window_attention(q, k, v, case.kernel_size, False, table, scale, self.explicit)

    def bind(self, case, q, k, v, rpb=None, scale=None):
        plan = plan_windows(case.resolution, case.kernel_size, False, q.device)
        qw, kw, vw = (to_windows(t, plan).detach().requires_grad_(t.requires_grad)
                      for t in (q, k, v))
        table = None
        if rpb is not None:
            table = swin_table_from_rpb(rpb).detach().requires_grad_(rpb.requires_grad)
        return Bound(fn=lambda: attend_windows(qw, kw, vw, plan, table, scale, self.explicit),
                     unpack=lambda out: from_windows(out, plan),
                     leaves=[t for t in (qw, kw, vw, table) if t is not None])


class SwinExplicitBackend(SwinBackend):
    name = "swin-explicit"
    explicit = True
    summary = ("Swin window attention as the paper ran it: explicit softmax(QK^T + B)V per "
               "window, window = kernel_size; window split outside timing.")
