"""natten and natten-unfused: natbench's compiled NA kernels (csrc/), as torch custom ops.

The layers, from the bottom: C++ registers the ops (csrc/bindings.cpp); here each op gets a fake
function (shapes only, so torch.compile can trace it), an autograd formula and a FLOP formula
(so FlopCounterMode counts it); the backends call the ops.

- natten: the fused design: online softmax per query over its window, no [N, Kn] matrix kept;
  backward recomputes probabilities from the saved log-sum-exp.
- natten-unfused: the original NAT extension's (v0.11) design: QK+RPB -> softmax -> AV, each a kernel (the
  softmax is torch's), with their backward kernels.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from natbench.backends.base import Backend, default_scale
from natbench.extension import build
from natbench.geometry import NAGeometry


def _geometry(q_shape, kernel_size, dilation, stride, is_causal) -> NAGeometry:
    return NAGeometry(tuple(q_shape[1:-2]), tuple(kernel_size), tuple(dilation), tuple(stride),
                      tuple(is_causal))


def _flops(q_shape, v_last, kernel_size, dilation, stride, is_causal, parts=("qk", "av")) -> int:
    """The FLOP convention, 2 * B * heads * keys attended * dims, for the products in `parts`
    (QK over D, AV over Dv)."""
    geometry = _geometry(q_shape, kernel_size, dilation, stride, is_causal)
    dims = (q_shape[-1] if "qk" in parts else 0) + (v_last if "av" in parts else 0)
    return 2 * q_shape[0] * q_shape[-2] * geometry.keys_per_query_sum() * dims


@lru_cache(maxsize=1)
def _register() -> None:
    """Fake, autograd and FLOP formulas for the ops the build loaded (once per process)."""
    from torch.utils.flop_counter import register_flop_formula

    ops = torch.ops.natbench

    # A real tensor beside a meta one dispatches here rather than to a kernel: refuse it, as the
    # kernels' own checks would, instead of returning uninitialised memory.
    def one_device(op, *tensors):
        devices = sorted({str(t.device) for t in tensors if t is not None})
        if len(devices) > 1:
            raise RuntimeError(f"{op}: every input must be on one device, got {', '.join(devices)}")

    @torch.library.register_fake("natbench::na_fused_forward")
    def _(q, k, v, rpb, kernel_size, dilation, stride, is_causal, scale):
        one_device("na_fused_forward", q, k, v, rpb)
        lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        n = q.numel() // (q.shape[0] * q.shape[-2] * q.shape[-1])
        return v.new_empty(v.shape), q.new_empty((q.shape[0], q.shape[-2], n), dtype=lse_dtype)

    @torch.library.register_fake("natbench::na_fused_backward")
    def _(q, k, v, rpb, out, lse, dout, kernel_size, dilation, stride, is_causal, scale):
        one_device("na_fused_backward", q, k, v, rpb, out, lse, dout)
        return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape),
                None if rpb is None else rpb.new_empty(rpb.shape))

    @torch.library.register_fake("natbench::na_qk_rpb")
    def _(q, k, rpb, kernel_size, dilation, stride, is_causal, scale):
        one_device("na_qk_rpb", q, k, rpb)
        g = _geometry(q.shape, kernel_size, dilation, stride, is_causal)
        return q.new_empty((q.shape[0], q.shape[-2], g.tokens, g.window_keys))

    @torch.library.register_fake("natbench::na_qk_rpb_backward")
    def _(q, k, d_logits, has_rpb, kernel_size, dilation, stride, is_causal, scale):
        one_device("na_qk_rpb_backward", q, k, d_logits)
        table = (q.shape[-2], *(2 * x - 1 for x in kernel_size))
        return q.new_empty(q.shape), k.new_empty(k.shape), q.new_empty(table) if has_rpb else None

    @torch.library.register_fake("natbench::na_av")
    def _(attn, v, kernel_size, dilation, stride, is_causal):
        one_device("na_av", attn, v)
        return v.new_empty(v.shape)

    @torch.library.register_fake("natbench::na_av_backward")
    def _(attn, v, dout, kernel_size, dilation, stride, is_causal):
        one_device("na_av_backward", attn, v, dout)
        return attn.new_empty(attn.shape), v.new_empty(v.shape)

    def fused_setup(ctx, inputs, output):
        q, k, v, rpb, *geometry, scale = inputs
        ctx.geometry, ctx.scale, ctx.has_rpb = geometry, scale, rpb is not None
        ctx.save_for_backward(q, k, v, rpb, *output)

    def fused_backward(ctx, dout, _dlse):
        q, k, v, rpb, out, lse = ctx.saved_tensors
        dq, dk, dv, drpb = ops.na_fused_backward(q, k, v, rpb, out, lse, dout, *ctx.geometry,
                                                 ctx.scale)
        return dq, dk, dv, drpb, None, None, None, None, None

    torch.library.register_autograd("natbench::na_fused_forward", fused_backward,
                                    setup_context=fused_setup)

    def qk_setup(ctx, inputs, output):
        q, k, rpb, *geometry, scale = inputs
        ctx.geometry, ctx.scale, ctx.has_rpb = geometry, scale, rpb is not None
        ctx.save_for_backward(q, k)

    def qk_backward(ctx, d_logits):
        q, k = ctx.saved_tensors
        dq, dk, drpb = ops.na_qk_rpb_backward(q, k, d_logits, ctx.has_rpb, *ctx.geometry, ctx.scale)
        return dq, dk, drpb, None, None, None, None, None

    torch.library.register_autograd("natbench::na_qk_rpb", qk_backward, setup_context=qk_setup)

    def av_setup(ctx, inputs, output):
        attn, v, *geometry = inputs
        ctx.geometry = geometry
        ctx.save_for_backward(attn, v)

    def av_backward(ctx, dout):
        attn, v = ctx.saved_tensors
        d_attn, dv = ops.na_av_backward(attn, v, dout, *ctx.geometry)
        return d_attn, dv, None, None, None, None

    torch.library.register_autograd("natbench::na_av", av_backward, setup_context=av_setup)

    # FLOP formulas: the convention of docs/semantics.md; each backward is twice its forward.
    @register_flop_formula(ops.na_fused_forward)
    def _(q_shape, k_shape, v_shape, rpb_shape, kernel_size, dilation, stride, is_causal, scale,
          out_shape=None, **kwargs):
        return _flops(q_shape, v_shape[-1], kernel_size, dilation, stride, is_causal)

    @register_flop_formula(ops.na_fused_backward)
    def _(q_shape, k_shape, v_shape, rpb_shape, out_shape_, lse_shape, dout_shape, kernel_size,
          dilation, stride, is_causal, scale, out_shape=None, **kwargs):
        return 2 * _flops(q_shape, v_shape[-1], kernel_size, dilation, stride, is_causal)

    @register_flop_formula(ops.na_qk_rpb)
    def _(q_shape, k_shape, rpb_shape, kernel_size, dilation, stride, is_causal, scale,
          out_shape=None, **kwargs):
        return _flops(q_shape, q_shape[-1], kernel_size, dilation, stride, is_causal, ("qk",))

    @register_flop_formula(ops.na_qk_rpb_backward)
    def _(q_shape, k_shape, d_shape, has_rpb, kernel_size, dilation, stride, is_causal, scale,
          out_shape=None, **kwargs):
        return 2 * _flops(q_shape, q_shape[-1], kernel_size, dilation, stride, is_causal, ("qk",))

    @register_flop_formula(ops.na_av)
    def _(attn_shape, v_shape, kernel_size, dilation, stride, is_causal, out_shape=None, **kwargs):
        return _flops(v_shape, v_shape[-1], kernel_size, dilation, stride, is_causal, ("av",))

    @register_flop_formula(ops.na_av_backward)
    def _(attn_shape, v_shape, dout_shape, kernel_size, dilation, stride, is_causal,
          out_shape=None, **kwargs):
        return 2 * _flops(v_shape, v_shape[-1], kernel_size, dilation, stride, is_causal, ("av",))


_ready = False  # set once the ops are built and registered: a flag torch.compile can guard on


def _ops():
    """torch.ops.natbench, built, loaded and registered on first use."""
    global _ready
    if not _ready:
        result = build()
        if not result.ok:
            from natbench.errors import UnsupportedError

            raise UnsupportedError(result.reason)
        _register()
        _ready = True
    return torch.ops.natbench


def _geometry_args(case):
    return (list(case.kernel_size), list(case.dilation), list(case.stride), list(case.is_causal))


class NattenBackend(Backend):
    name = "natten"
    summary = ("natbench's compiled fused NA kernel (csrc/): on the CPU, tiles of neighbouring "
               "queries as vector lanes (scores, softmax and sums elementwise, no attention "
               "matrix), OpenMP over batch x heads x query blocks; a warp per query on CUDA; fp32 "
               "accumulation.")
    cuda_max_head_dim = 256  # a lane keeps 8 of the head dim's values in registers
    needs_extension = True

    def unavailable_reason(self):
        result = build()
        return None if result.ok else result.reason

    def supports_extra(self, case):
        if case.device != "cuda":
            return None
        result = build()
        if not result.cuda:
            return f"the natbench extension was built without its CUDA kernels: {result.cuda_reason}."
        if case.dtype == "float64":
            return f"{self.name}'s CUDA kernels run float32, float16 and bfloat16; this case is float64."
        if self.cuda_max_head_dim and case.head_dim > self.cuda_max_head_dim:
            return (f"{self.name}'s CUDA kernel takes head dims up to {self.cuda_max_head_dim}; "
                    f"this case has {case.head_dim}.")
        return None

    def forward(self, q, k, v, case, rpb=None, scale=None):
        out, _ = _ops().na_fused_forward(
            q, k, v, rpb, *_geometry_args(case), default_scale(q.shape[-1], scale))
        return out


class NattenUnfusedBackend(NattenBackend):
    name = "natten-unfused"
    summary = ("natbench's compiled kernels in the NAT v0.11 design: QK+RPB kernel, torch "
               "softmax, AV kernel (an [N, Kn] attention matrix in memory), with backward kernels.")
    cuda_max_head_dim = None

    def forward(self, q, k, v, case, rpb=None, scale=None):
        geometry = _geometry_args(case)
        ops = _ops()
        logits = ops.na_qk_rpb(q, k, rpb, *geometry, default_scale(q.shape[-1], scale))
        return ops.na_av(torch.softmax(logits, dim=-1), v, *geometry)
