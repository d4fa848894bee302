"""sdpa: global self-attention through scaled_dot_product_attention, the limit of NA as K grows."""

from __future__ import annotations

import torch.nn.functional as F

from natbench.backends.base import Backend, Bound, Capabilities, heads_first


class SdpaBackend(Backend):
    name = "sdpa"
    op = "full"
    summary = ("Full self-attention over all tokens (scaled_dot_product_attention); ignores the "
               "kernel: the cost NA approaches as the kernel grows.")
    caps = Capabilities(causal=False, rpb=False)
    layout = "[B, heads, N, D]"

    def forward(self, q, k, v, case, rpb=None, scale=None):
        out = F.scaled_dot_product_attention(*(heads_first(t) for t in (q, k, v)), scale=scale)
        return out.transpose(1, 2).reshape(*q.shape[:-1], v.shape[-1])

    def bind(self, case, q, k, v, rpb=None, scale=None):
        qh, kh, vh = (heads_first(t).contiguous().detach().requires_grad_(t.requires_grad)
                      for t in (q, k, v))
        return Bound(fn=lambda: F.scaled_dot_product_attention(qh, kh, vh, scale=scale),
                     unpack=lambda out: out.transpose(1, 2).reshape(*q.shape[:-1], v.shape[-1]),
                     leaves=[qh, kh, vh])
