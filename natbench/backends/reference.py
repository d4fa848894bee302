"""reference: neighborhood, window and full attention straight from their definitions.

Slow and readable on purpose: it is the oracle every other backend is checked against. It builds,
for each spatial axis, a dense [L, L] table saying which key each query sees (from
`geometry.axis_window`, or Swin's window and region rules) and which bias entry applies, then
runs a dense masked softmax over all keys. Work is done in chunks of query rows so that large maps
stay within memory, and `rows` computes only some query rows (for spot checks of huge cases).
"""

from __future__ import annotations

from math import prod

import torch

from natbench.backends.base import Backend, Capabilities, default_scale
from natbench.case import Case
from natbench.geometry import axis_window

_CHUNK_ELEMENTS = 1 << 24  # logits elements per chunk of query rows


def na_axis_tables(length: int, kernel: int, dilation: int, stride: int, causal: bool):
    """(visible [L, L] bool, bias index [L, L], bias radix) for one NA axis."""
    visible = torch.zeros(length, length, dtype=torch.bool)
    offset = torch.zeros(length, length, dtype=torch.long)
    for i in range(length):
        for j in axis_window(i, length, kernel, dilation, stride, causal):
            visible[i, j] = True
            offset[i, j] = j // dilation - i // dilation + kernel - 1
    return visible, offset, 2 * kernel - 1


def wsa_axis_tables(length: int, window: int, shifted: bool):
    """(visible, bias index, radix) for one axis of Swin window attention.

    The map is padded at the end to a multiple of the window; SWSA rolls it by -floor(w/2), so a
    token at i lands at p = (i - shift) mod padded. Two tokens see each other when they share a
    window and, when shifted, one of Swin's three regions (p < P-w, P-w <= p < P-shift, the rest).
    The bias index is (query - key) offset inside the window, plus w - 1.
    """
    padded = -(-length // window) * window
    shift = window // 2 if shifted else 0
    pos = [(i - shift) % padded for i in range(length)]

    def region(p: int) -> int:
        if not shifted:
            return 0
        return 0 if p < padded - window else (1 if p < padded - shift else 2)

    visible = torch.zeros(length, length, dtype=torch.bool)
    offset = torch.zeros(length, length, dtype=torch.long)
    for i in range(length):
        for j in range(length):
            visible[i, j] = pos[i] // window == pos[j] // window and region(pos[i]) == region(pos[j])
            offset[i, j] = pos[i] % window - pos[j] % window + window - 1
    return visible, offset, 2 * window - 1


def attend(q, k, v, axis_tables, bias=None, scale=None, rows=None):
    """Dense masked attention over per-axis tables; q, k, v in the public heads-last layout.

    `bias` is [heads, prod(radices)] indexed by the mixed-radix combination of per-axis bias
    indices (first axis most significant). Returns [B, *spatial, heads, Dv], or [B, R, heads, Dv]
    for the flat query indices in `rows`.
    """
    batch, *spatial, heads, head_dim = q.shape
    n = prod(spatial)
    scale = default_scale(head_dim, scale)
    qf, kf, vf = (t.reshape(batch, n, heads, t.shape[-1]).transpose(1, 2) for t in (q, k, v))
    # Coordinates of every flat token index on each axis (row-major).
    flat = torch.arange(n)
    coords = []
    for axis in range(len(spatial)):
        coords.append((flat // prod(spatial[axis + 1:])) % spatial[axis])
    radix_strides = [prod(t[2] for t in axis_tables[axis + 1:]) for axis in range(len(spatial))]

    subset = rows is not None
    rows = torch.as_tensor(rows, dtype=torch.long) if subset else flat
    chunk = max(1, _CHUNK_ELEMENTS // max(1, batch * heads * n))
    outputs = []
    for part in rows.split(chunk):
        visible = torch.ones(len(part), n, dtype=torch.bool)
        index = torch.zeros(len(part), n, dtype=torch.long)
        for axis, (axis_visible, axis_offset, _) in enumerate(axis_tables):
            qc, kc = coords[axis][part], coords[axis]
            visible &= axis_visible[qc][:, kc]
            index += axis_offset[qc][:, kc] * radix_strides[axis]
        visible, index = visible.to(q.device), index.to(q.device)
        logits = scale * (qf[:, :, part] @ kf.transpose(-1, -2))
        if bias is not None:
            logits = logits + bias[:, index].to(logits.dtype)
        logits = logits.masked_fill(~visible, float("-inf"))
        outputs.append(torch.softmax(logits, dim=-1) @ vf)
    out = torch.cat(outputs, dim=2).transpose(1, 2)
    return out if subset else out.reshape(batch, *spatial, heads, v.shape[-1])


def neighborhood(q, k, v, case: Case, rpb=None, scale=None, rows=None):
    """Neighborhood attention by definition; `rpb` is NAT's [heads, 2K0-1, ...] table."""
    tables = [na_axis_tables(*axis) for axis in zip(case.resolution, case.kernel_size,
                                                   case.dilation, case.stride, case.is_causal)]
    bias = None if rpb is None else rpb.reshape(rpb.shape[0], -1)
    return attend(q, k, v, tables, bias, scale, rows)


def window(q, k, v, window_size, shifted=False, rpb=None, scale=None, rows=None):
    """Swin (shifted) window attention by definition; `rpb` is Swin's [prod(2w-1), heads] table."""
    spatial = q.shape[1:-2]
    tables = [wsa_axis_tables(length, w, shifted) for length, w in zip(spatial, window_size)]
    bias = None if rpb is None else rpb.transpose(0, 1)
    return attend(q, k, v, tables, bias, scale, rows)


def full(q, k, v, scale=None, rows=None):
    """Global self-attention: every query sees every key."""
    tables = [(torch.ones(n, n, dtype=torch.bool), torch.zeros(n, n, dtype=torch.long), 1)
              for n in q.shape[1:-2]]
    return attend(q, k, v, tables, None, scale, rows)


class ReferenceBackend(Backend):
    name = "reference"
    summary = ("Neighborhood attention straight from the definition: dense masked softmax over "
               "all keys; any dtype, slow, the oracle for every check.")
    caps = Capabilities()

    def forward(self, q, k, v, case, rpb=None, scale=None):
        return neighborhood(q, k, v, case, rpb, scale)
