"""An example natbench plugin: neighborhood attention as scaled_dot_product_attention over every
key, masked to each query's window. It is correct (natbench checks it against its reference) and
far from fast: a kernel of your own goes where `bind` builds the call."""

import torch
import torch.nn.functional as F

from natbench.plugin import Backend, Bound, Capabilities, axis_window, heads_first


def window_mask(case, device) -> torch.Tensor:
    """[N, N] booleans: query i may attend key j. A product of one [L, L] table per axis."""
    mask = torch.ones(1, 1, dtype=torch.bool)
    for length, kernel, dilation, stride, causal in zip(case.resolution, case.kernel_size, case.dilation,
                                                        case.stride, case.is_causal):
        axis = torch.zeros(length, length, dtype=torch.bool)
        for i in range(length):
            axis[i, list(axis_window(i, length, kernel, dilation, stride, causal))] = True
        mask = (mask[:, None, :, None] & axis[None, :, None, :]).reshape(mask.shape[0] * length, -1)
    return mask.to(device)


class MaskedSdpaBackend(Backend):
    name = "example-masked-sdpa"
    summary = "Example plugin: NA as scaled_dot_product_attention with each query's window as a mask."
    caps = Capabilities(rpb=False)  # no positional bias; every rank, dtype, device, dilation, ...
    layout = "[B, heads, N, D]"
    interface = 1  # the backend interface this plugin was written for (natbench.plugin.INTERFACE)

    def bind(self, case, q, k, v, rpb=None, scale=None):
        # Everything here happens before timing: the layout change and the mask.
        mask = window_mask(case, q.device)
        qh, kh, vh = (heads_first(t).contiguous().detach().requires_grad_(t.requires_grad)
                      for t in (q, k, v))
        return Bound(fn=lambda: F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask, scale=scale),
                     unpack=lambda out: out.transpose(1, 2).reshape(*q.shape[:-1], v.shape[-1]),
                     leaves=[qh, kh, vh])

    def forward(self, q, k, v, case, rpb=None, scale=None):
        bound = self.bind(case, q, k, v, rpb, scale)
        return bound.unpack(bound.fn())
