"""torch: neighborhood attention in plain PyTorch ops, on any device, with autograd.

Queries are cut into tiles: per axis, up to `TILE` consecutive queries of one dilation group.
Because a query's window moves by at most one key per query, a tile's keys all lie in a region
of at most TILE + K - 1 keys per axis (more with stride). Each tile gathers its region once and
runs a dense [tile, region] product, masked to each query's exact key set (docs/semantics.md),
softmax, and a second product; outputs are gathered back to token order. The dense products
do (TILE + K - 1)^r / K^r times the useful work, in exchange for large matmuls instead of
per-query mat-vecs and no per-query copy of its keys. Index tables are cached per geometry.

Peak extra memory of a forward without autograd, in bytes (e = element size, M = tiles x
tile size >= N, R = region size, T = number of tiles; the output included), the largest of
its three phases:

    e * B * heads * max(M*R + T*R*D + M*D + N*D,    scores: logits, key regions, query tiles
                        2*M*R + T*R*Dv + M*Dv,      mix: logits, softmax, value regions, output
                        M*R + M*Dv + 2*N*Dv)        untile: logits, tiled and final outputs

`forward_peak_bytes` computes it; a test holds the measured peak to it. The cached tables (keys, query positions, a bool mask of M * R bytes,
and M * R bias indices with rpb) are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import torch

from natbench.backends.base import Backend, Capabilities, default_scale
from natbench.geometry import NAGeometry

TILE = 8


def axis_bounds(length: int, kernel: int, dilation: int, stride: int, causal: bool):
    """Per query on one axis: (dilation group, local index, first local key, end local key)."""
    i = torch.arange(length)
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


@dataclass(frozen=True)
class AxisTiles:
    queries: torch.Tensor  # [tiles, T] global query index (padded slots repeat the last query)
    keys: torch.Tensor  # [tiles, R] global key index (padded slots repeat the last key)
    mask: torch.Tensor  # [tiles, T, R] query sees key
    bias: torch.Tensor  # [tiles, T, R] NAT bias index (j' - i' + K - 1), clamped into range
    position: torch.Tensor  # [L] flat (tile * T + slot) of each query


def _axis_tiles(length, kernel, dilation, stride, causal) -> AxisTiles:
    group, local, first, end = (t.tolist() for t in axis_bounds(length, kernel, dilation, stride,
                                                                causal))
    tiles = []
    for g in range(dilation):
        members = list(range(g, length, dilation))
        for start in range(0, len(members), TILE):
            queries = members[start:start + TILE]
            low = min(first[i] for i in queries)
            tiles.append((queries, low, max(end[i] for i in queries) - low))
    size = max(len(q) for q, _, _ in tiles)
    region = max(r for _, _, r in tiles)
    queries = torch.tensor([q + [q[-1]] * (size - len(q)) for q, _, _ in tiles])
    low = torch.tensor([lo for _, lo, _ in tiles])
    span = torch.tensor([r for _, _, r in tiles])
    slot = torch.arange(region)
    key_local = low[:, None] + torch.minimum(slot, span[:, None] - 1)  # [tiles, R]
    groups = torch.tensor(group)[queries[:, 0]]
    keys = key_local * dilation + groups[:, None]
    first_q, end_q, local_q = (torch.tensor(x)[queries] for x in (first, end, local))
    candidate = key_local[:, None, :]  # [tiles, 1, R]
    mask = ((slot < span[:, None])[:, None, :] & (candidate >= first_q[..., None])
            & (candidate < end_q[..., None]))
    bias = (candidate - local_q[..., None] + kernel - 1).clamp(0, 2 * kernel - 2)
    position = torch.empty(length, dtype=torch.long)
    for t, (members, _, _) in enumerate(tiles):
        for s, i in enumerate(members):
            position[i] = t * size + s
    return AxisTiles(queries, keys, mask, bias, position)


@dataclass(frozen=True)
class Tables:
    queries: torch.Tensor  # [tiles, M_tile]
    keys: torch.Tensor  # [tiles, R]
    mask: torch.Tensor  # [tiles, M_tile, R]
    bias: torch.Tensor  # [tiles, M_tile, R]
    position: torch.Tensor  # [N]


def _combine(parts, rank, radix, dims):
    """Mixed-radix sum over axes of per-axis tables, broadcast into one array per `dims`."""
    total = torch.zeros((), dtype=parts[0].dtype)
    for axis, part in enumerate(parts):
        shape = [1] * (len(dims) * rank)
        for d, size in enumerate(part.shape):
            shape[dims[d] * rank + axis] = size
        total = total * radix[axis] + part.view(shape)
    return total


@lru_cache(maxsize=32)
def tile_tables(geometry: NAGeometry, device: str) -> Tables:
    rank = geometry.rank
    axes = [_axis_tiles(*p) for p in zip(geometry.resolution, geometry.kernel_size,
                                           geometry.dilation, geometry.stride, geometry.is_causal)]
    n_tiles = 1
    for a in axes:
        n_tiles *= a.queries.shape[0]
    lengths = list(geometry.resolution)
    queries = _combine([a.queries for a in axes], rank, lengths, (0, 1)).reshape(n_tiles, -1)
    keys = _combine([a.keys for a in axes], rank, lengths, (0, 1)).reshape(n_tiles, -1)
    mask = torch.ones((), dtype=torch.bool)
    for axis, a in enumerate(axes):
        shape = [1] * (3 * rank)
        for d, size in enumerate(a.mask.shape):
            shape[d * rank + axis] = size
        mask = mask & a.mask.view(shape)
    bias = _combine([a.bias for a in axes], rank, [2 * k - 1 for k in geometry.kernel_size],
                    (0, 1, 2))
    slots = [a.queries.shape[1] for a in axes]
    tiles = [a.queries.shape[0] for a in axes]
    tile_of = _combine([a.position // s for a, s in zip(axes, slots)], rank, tiles, (0,))
    slot_of = _combine([a.position % s for a, s in zip(axes, slots)], rank, slots, (0,))
    m_tile = queries.shape[1]
    position = (tile_of * m_tile + slot_of).reshape(-1)
    return Tables(queries.to(device), keys.to(device), mask.reshape(n_tiles, m_tile, -1).to(device),
                  bias.reshape(n_tiles, m_tile, -1).to(device), position.to(device))


def neighborhood_attention(q, k, v, geometry: NAGeometry, rpb=None, scale=None):
    """NA on public-layout tensors [B, *spatial, heads, D]; differentiable in q, k, v and rpb."""
    batch, *spatial, heads, head_dim = q.shape
    tables = tile_tables(geometry, str(q.device))
    n = tables.position.shape[0]

    def head_major(t):
        return t.reshape(batch, n, heads, t.shape[-1]).transpose(1, 2)

    q_tiles = (head_major(q) * default_scale(head_dim, scale))[:, :, tables.queries]
    logits = q_tiles @ head_major(k)[:, :, tables.keys].transpose(-1, -2)
    del q_tiles
    if rpb is not None:
        logits += rpb.reshape(heads, -1)[:, tables.bias].to(logits.dtype)
    logits.masked_fill_(~tables.mask, float("-inf"))
    out = torch.softmax(logits, dim=-1) @ head_major(v)[:, :, tables.keys]
    out = out.reshape(batch, heads, -1, v.shape[-1])[:, :, tables.position]
    return out.transpose(1, 2).reshape(batch, *spatial, heads, v.shape[-1])


class TorchBackend(Backend):
    name = "torch"
    summary = ("Pure-PyTorch NA: query tiles attend their key regions with dense matmuls, masked "
               "to each query's window; CPU and CUDA, autograd for q, k, v and rpb.")
    caps = Capabilities()

    def forward(self, q, k, v, case, rpb=None, scale=None):
        return neighborhood_attention(q, k, v, case.geometry, rpb, scale)

    def bind(self, case, q, k, v, rpb=None, scale=None):
        tile_tables(case.geometry, str(q.device))  # build the cached tables outside timing
        return super().bind(case, q, k, v, rpb, scale)


def forward_peak_bytes(case, element_size: int, head_dim_v: int | None = None) -> int:
    """The module docstring's peak-memory formula for a forward without autograd."""
    tables = tile_tables(case.geometry, "cpu")
    tiles, m_tile, region = tables.mask.shape
    m, n, d = tiles * m_tile, case.tokens, case.head_dim
    dv = d if head_dim_v is None else head_dim_v
    per_head = max(m * region + tiles * region * d + m * d + n * d,
                   2 * m * region + tiles * region * dv + m * dv,
                   m * region + m * dv + 2 * n * dv)
    return element_size * case.batch * case.heads * per_head
