"""torch: neighborhood attention in plain PyTorch ops, on any device, with autograd.

Per geometry it builds (once, cached) an index table [N, prod(K)] of every query's keys, then
gathers the neighbours of all queries and runs two batched mat-vec products with a softmax in
between. Peak extra memory of a forward without autograd, in bytes (e = element size, N = tokens,
Kn = prod(K), the output included):

    e * B * heads * max(N * Kn * (D + 1) + 2 * N * D,      scores: gathered keys, logits,
                        N * Kn * (Dv + 2) + 2 * N * Dv)    mix: gathered values, logits, softmax

plus the scaled head-major q and k (or v and the output). With autograd the gathered keys and
values and the softmax stay alive for backward. The index tables (8 * N * Kn bytes for keys, as
much again for bias indices with rpb, and a bool mask with causal axes) are cached per geometry
and device and not counted.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from natbench.backends.base import Backend, Capabilities, default_scale
from natbench.geometry import NAGeometry


def axis_bounds(length: int, kernel: int, dilation: int, stride: int, causal: bool, device="cpu"):
    """Per query on one axis: (dilation group, local index, first local key, end local key)."""
    i = torch.arange(length, device=device)
    group, local = i % dilation, i // dilation
    group_len = length // dilation + (group < length % dilation).long()
    if causal:
        leader = torch.minimum((local // stride) * stride + stride - 1, group_len - 1)
        first = (leader - kernel + 1).clamp(min=0)
        end = torch.minimum(local + 1, group_len)
    else:
        leader = torch.minimum((local // stride) * stride + stride // 2, group_len - 1)
        first = torch.minimum((leader - kernel // 2).clamp(min=0), group_len - kernel)
        end = first + kernel
    return group, local, first, end


def _axis_index(length, kernel, dilation, stride, causal):
    """[L, K] global key indices, validity, and NAT bias indices for one axis."""
    group, local, first, end = axis_bounds(length, kernel, dilation, stride, causal)
    keys_local = first[:, None] + torch.arange(kernel)
    valid = keys_local < end[:, None]
    keys_local = torch.minimum(keys_local, end[:, None] - 1)  # masked slots stay in range
    keys = keys_local * dilation + group[:, None]
    offset = keys_local - local[:, None] + kernel - 1
    return keys, valid, offset


@lru_cache(maxsize=32)
def neighbor_tables(geometry: NAGeometry, device: str):
    """(keys [N, Kn], valid [N, Kn] or None, bias index [N, Kn]) with row-major flat indices."""
    rank = geometry.rank
    keys = bias = torch.zeros((), dtype=torch.long)
    valid = torch.ones((), dtype=torch.bool)
    for axis, params in enumerate(zip(geometry.resolution, geometry.kernel_size,
                                      geometry.dilation, geometry.stride, geometry.is_causal)):
        axis_keys, axis_valid, axis_offset = _axis_index(*params)
        shape = [1] * (2 * rank)
        shape[axis], shape[rank + axis] = params[0], params[1]
        keys = keys * params[0] + axis_keys.view(shape)
        bias = bias * (2 * params[1] - 1) + axis_offset.view(shape)
        valid = valid & axis_valid.view(shape)
    n, kn = geometry.tokens, geometry.window_keys
    keys, bias, valid = keys.reshape(n, kn), bias.reshape(n, kn), valid.reshape(n, kn)
    mask = None if bool(valid.all()) else valid.to(device)
    return keys.to(device), mask, bias.to(device)


def _scores(qh, kh, keys):
    """[B, h, N, Kn] dot products of each query with its gathered keys."""
    return (kh[:, :, keys] @ qh.unsqueeze(-1)).squeeze(-1)


def _mix(attn, vh, keys):
    """[B, h, N, Dv] softmax-weighted sum of each query's gathered values."""
    return (attn.unsqueeze(-2) @ vh[:, :, keys]).squeeze(-2)


def neighborhood_attention(q, k, v, geometry: NAGeometry, rpb=None, scale=None):
    """NA on public-layout tensors [B, *spatial, heads, D]; differentiable in q, k, v and rpb."""
    batch, *spatial, heads, head_dim = q.shape
    keys, mask, bias_index = neighbor_tables(geometry, str(q.device))
    n = keys.shape[0]

    def head_major(t):
        return t.reshape(batch, n, heads, t.shape[-1]).transpose(1, 2).contiguous()

    logits = _scores(head_major(q) * default_scale(head_dim, scale), head_major(k), keys)
    if rpb is not None:
        logits += rpb.reshape(heads, -1)[:, bias_index].to(logits.dtype)
    if mask is not None:
        logits.masked_fill_(~mask, float("-inf"))
    out = _mix(torch.softmax(logits, dim=-1), head_major(v), keys)
    return out.transpose(1, 2).reshape(batch, *spatial, heads, v.shape[-1])


class TorchBackend(Backend):
    name = "torch"
    summary = ("Pure-PyTorch NA: gathers each query's neighbours through a cached index table; "
               "CPU and CUDA, autograd for q, k, v and rpb.")
    caps = Capabilities()

    def forward(self, q, k, v, case, rpb=None, scale=None):
        return neighborhood_attention(q, k, v, case.geometry, rpb, scale)

    def bind(self, case, q, k, v, rpb=None, scale=None):
        neighbor_tables(case.geometry, str(q.device))  # build the cached tables outside timing
        return super().bind(case, q, k, v, rpb, scale)


def forward_peak_bytes(case, element_size: int, head_dim_v: int | None = None) -> int:
    """The module docstring's peak-memory formula for a forward without autograd."""
    n, kn, d = case.tokens, case.geometry.window_keys, case.head_dim
    dv = d if head_dim_v is None else head_dim_v
    per_head = max(n * kn * (d + 1) + 2 * n * d, n * kn * (dv + 2) + 2 * n * dv)
    return element_size * case.batch * case.heads * per_head
