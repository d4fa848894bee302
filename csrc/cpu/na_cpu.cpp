// CPU host API: argument checks, then dispatch over rank and dtype to the kernels.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include "../include/na_ops.h"
#include "na_kernels.h"

namespace natbench {
namespace {

// Spatial axes of a [B, *spatial, H, D] tensor, checked against the geometry lists.
template <int R>
Geometry<R> geometry(const at::Tensor& x, const IntList& kernel, const IntList& dilation,
                     const IntList& stride, const BoolList& causal) {
  TORCH_CHECK(x.dim() == R + 3, "q must have ", R + 3, " dims [B, *spatial, heads, D], got ", x.dim());
  TORCH_CHECK(static_cast<int64_t>(kernel.size()) == R && static_cast<int64_t>(dilation.size()) == R &&
                  static_cast<int64_t>(stride.size()) == R && static_cast<int64_t>(causal.size()) == R,
              "kernel_size, dilation, stride and is_causal need ", R, " entries each");
  std::array<Axis, R> axes;
  for (int d = 0; d < R; ++d) {
    const int64_t length = x.size(d + 1);
    TORCH_CHECK(kernel[d] >= 1 && dilation[d] >= 1 && kernel[d] * dilation[d] <= length,
                "axis ", d, ": kernel_size ", kernel[d], " x dilation ", dilation[d], " > length ", length);
    TORCH_CHECK(stride[d] >= 1 && stride[d] <= kernel[d], "axis ", d, ": stride ", stride[d],
                " is outside 1..kernel_size ", kernel[d]);
    axes[d] = Axis{length, kernel[d], dilation[d], stride[d], causal.get(d)};
  }
  return Geometry<R>(axes);
}

Shape shape_of(const at::Tensor& q, const at::Tensor& v) {
  return Shape{q.size(0), q.size(-2), q.size(-1), v.size(-1)};
}

void check_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.device().is_cpu(), "q must be on the CPU, got ", q.device());
  TORCH_CHECK(k.sizes() == q.sizes(), "k must have q's shape ", q.sizes(), ", got ", k.sizes());
  TORCH_CHECK(v.sizes().slice(0, v.dim() - 1) == q.sizes().slice(0, q.dim() - 1),
              "v must match q in all but its last dim, got ", v.sizes());
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "q, k and v must share one dtype");
}

template <typename Fn>
void with_rank(int64_t rank, Fn&& fn) {
  switch (rank) {
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    default: TORCH_CHECK(false, "rank must be 1, 2 or 3, got ", rank);
  }
}

template <typename T>
using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

at::ScalarType acc_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

template <typename T>
const T* maybe(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// The fused kernels read every input in the accumulation type (no copy for float and double).
at::Tensor in_acc(const at::Tensor& x) { return x.to(acc_type(x)).contiguous(); }

// The bias table as [H, bias_size + kBiasPad] in the accumulation type: a zero tail per head keeps
// the kernels' full-width vector loads inside it.
std::optional<at::Tensor> padded_bias(const std::optional<at::Tensor>& rpb, const at::Tensor& q) {
  if (!rpb.has_value()) return rpb;
  const int64_t heads = rpb->size(0), size = rpb->numel() / heads;
  auto table = at::zeros({heads, size + kBiasPad}, q.options().dtype(acc_type(q)));
  table.narrow(1, 0, size).copy_(rpb->reshape({heads, size}));
  return table;
}

std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  if (!t.has_value()) return t;
  return t->contiguous();
}

// The packed copy of a [B, N, H, dim] tensor for the fused kernels, from torch's allocator
// (64-byte aligned) so that memory measurements see it.
template <typename A>
at::Tensor workspace(const Shape& shape, int64_t tokens, int64_t dim, const at::Tensor& like) {
  return at::empty({packed_size<A>(shape, tokens, dim)}, like.options());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> fused_forward_cpu(
    const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_, const std::optional<at::Tensor>& rpb_,
    IntList kernel, IntList dilation, IntList stride, BoolList causal, double scale) {
  check_inputs(q_, k_, v_);
  auto q = in_acc(q_), k = in_acc(k_), v = in_acc(v_);
  auto rpb = padded_bias(rpb_, q_);
  auto out = at::empty(v_.sizes(), v_.options());
  auto lse = at::empty({q.size(0), q.size(-2), q.numel() / (q.size(0) * q.size(-2) * q.size(-1))},
                       q.options());
  with_rank(q.dim() - 3, [&](auto rank) {
    constexpr int R = decltype(rank)::value;
    const auto g = geometry<R>(q, kernel, dilation, stride, causal);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q_.scalar_type(), "na_fused_forward", [&] {
      using A = acc_t<scalar_t>;
      const Shape shape = shape_of(q, v);
      const at::Tensor packed_keys = workspace<A>(shape, g.tokens, shape.dim, q);
      with_key_width<A>(g.axes[R - 1].kernel, [&](auto bytes) {
        fused_forward<R, scalar_t, A, decltype(bytes)::value>(
            g, shape, q.data_ptr<A>(), k.data_ptr<A>(), v.data_ptr<A>(), maybe<A>(rpb),
            out.data_ptr<scalar_t>(), lse.data_ptr<A>(), static_cast<A>(scale),
            packed_keys.data_ptr<A>());
      });
    });
  });
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>> fused_backward_cpu(
    const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_, const std::optional<at::Tensor>& rpb_,
    const at::Tensor& out_, const at::Tensor& lse_, const at::Tensor& dout_, IntList kernel,
    IntList dilation, IntList stride, BoolList causal, double scale) {
  check_inputs(q_, k_, v_);
  auto q = in_acc(q_), k = in_acc(k_), v = in_acc(v_), out = in_acc(out_), dout = in_acc(dout_);
  auto lse = lse_.contiguous();
  auto rpb = padded_bias(rpb_, q_);
  auto dq = at::empty(q_.sizes(), q_.options());
  auto dk = at::zeros(k.sizes(), k.options());
  auto dv = at::zeros(v.sizes(), v.options());
  std::optional<at::Tensor> drpb;
  with_rank(q.dim() - 3, [&](auto rank) {
    constexpr int R = decltype(rank)::value;
    const auto g = geometry<R>(q, kernel, dilation, stride, causal);
    at::Tensor drpb_acc;
    if (rpb.has_value()) drpb_acc = at::zeros({q.size(0), q.size(-2), g.bias_size}, dk.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q_.scalar_type(), "na_fused_backward", [&] {
      using A = acc_t<scalar_t>;
      const Shape shape = shape_of(q, v);
      const at::Tensor packed_keys = workspace<A>(shape, g.tokens, shape.dim, q);
      const at::Tensor packed_values = workspace<A>(shape, g.tokens, shape.dim_v, q);
      with_key_width<A>(g.axes[R - 1].kernel, [&](auto bytes) {
        fused_backward<R, scalar_t, A, decltype(bytes)::value>(
            g, shape, q.data_ptr<A>(), k.data_ptr<A>(), v.data_ptr<A>(), maybe<A>(rpb),
            out.data_ptr<A>(), dout.data_ptr<A>(), lse.data_ptr<A>(), dq.data_ptr<scalar_t>(),
            dk.data_ptr<A>(), dv.data_ptr<A>(), rpb.has_value() ? drpb_acc.data_ptr<A>() : nullptr,
            static_cast<A>(scale), packed_keys.data_ptr<A>(), packed_values.data_ptr<A>());
      });
    });
    if (rpb.has_value()) drpb = drpb_acc.sum(0).view(rpb_->sizes()).to(rpb_->scalar_type());
  });
  return {dq, dk.to(q_.scalar_type()), dv.to(q_.scalar_type()), drpb};
}

at::Tensor qk_rpb_cpu(const at::Tensor& q_, const at::Tensor& k_, const std::optional<at::Tensor>& rpb_,
                      IntList kernel, IntList dilation, IntList stride, BoolList causal, double scale) {
  check_inputs(q_, k_, k_);
  auto q = q_.contiguous(), k = k_.contiguous();
  auto rpb = contiguous(rpb_);
  at::Tensor logits;
  with_rank(q.dim() - 3, [&](auto rank) {
    constexpr int R = decltype(rank)::value;
    const auto g = geometry<R>(q, kernel, dilation, stride, causal);
    logits = at::empty({q.size(0), q.size(-2), g.tokens, g.window_keys}, q.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "na_qk_rpb", [&] {
      using A = acc_t<scalar_t>;
      qk_rpb<R, scalar_t, A>(g, shape_of(q, q), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
                             maybe<scalar_t>(rpb), logits.data_ptr<scalar_t>(), static_cast<A>(scale));
    });
  });
  return logits;
}

std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>> qk_rpb_backward_cpu(
    const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& d_logits_, bool has_rpb,
    IntList kernel, IntList dilation, IntList stride, BoolList causal, double scale) {
  check_inputs(q_, k_, k_);
  auto q = q_.contiguous(), k = k_.contiguous(), d_logits = d_logits_.contiguous().to(q.scalar_type());
  auto dq = at::empty(q.sizes(), q.options());
  auto dk = at::zeros(k.sizes(), k.options().dtype(acc_type(q)));
  std::optional<at::Tensor> drpb;
  with_rank(q.dim() - 3, [&](auto rank) {
    constexpr int R = decltype(rank)::value;
    const auto g = geometry<R>(q, kernel, dilation, stride, causal);
    at::Tensor drpb_acc;
    if (has_rpb) drpb_acc = at::zeros({q.size(0), q.size(-2), g.bias_size}, dk.options());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, q.scalar_type(), "na_qk_rpb_backward", [&] {
      using A = acc_t<scalar_t>;
      qk_rpb_backward<R, scalar_t, A>(g, shape_of(q, q), q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
                                      d_logits.data_ptr<scalar_t>(), dq.data_ptr<scalar_t>(), dk.data_ptr<A>(),
                                      has_rpb ? drpb_acc.data_ptr<A>() : nullptr, static_cast<A>(scale));
    });
    if (has_rpb) {
      std::vector<int64_t> table{q.size(-2)};
      for (int d = 0; d < R; ++d) table.push_back(2 * kernel[d] - 1);
      drpb = drpb_acc.sum(0).view(table).to(q.scalar_type());
    }
  });
  return {dq, dk.to(q.scalar_type()), drpb};
}

at::Tensor av_cpu(const at::Tensor& attn_, const at::Tensor& v_, IntList kernel, IntList dilation,
                  IntList stride, BoolList causal) {
  TORCH_CHECK(attn_.scalar_type() == v_.scalar_type(), "attn and v must share one dtype");
  auto attn = attn_.contiguous(), v = v_.contiguous();
  auto out = at::empty(v.sizes(), v.options());
  with_rank(v.dim() - 3, [&](auto rank) {
    constexpr int R = decltype(rank)::value;
    const auto g = geometry<R>(v, kernel, dilation, stride, causal);
    TORCH_CHECK(attn.size(-1) == g.window_keys && attn.size(-2) == g.tokens,
                "attn must be [B, heads, N, prod(kernel_size)], got ", attn.sizes());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "na_av", [&] {
      av<R, scalar_t, acc_t<scalar_t>>(g, shape_of(v, v), attn.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                       out.data_ptr<scalar_t>());
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> av_backward_cpu(const at::Tensor& attn_, const at::Tensor& v_,
                                                   const at::Tensor& dout_, IntList kernel,
                                                   IntList dilation, IntList stride, BoolList causal) {
  auto attn = attn_.contiguous(), v = v_.contiguous(), dout = dout_.contiguous().to(v.scalar_type());
  auto d_attn = at::empty(attn.sizes(), attn.options());
  auto dv = at::zeros(v.sizes(), v.options().dtype(acc_type(v)));
  with_rank(v.dim() - 3, [&](auto rank) {
    constexpr int R = decltype(rank)::value;
    const auto g = geometry<R>(v, kernel, dilation, stride, causal);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, v.scalar_type(), "na_av_backward", [&] {
      using A = acc_t<scalar_t>;
      av_backward<R, scalar_t, A>(g, shape_of(v, v), attn.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                  dout.data_ptr<scalar_t>(), d_attn.data_ptr<scalar_t>(), dv.data_ptr<A>());
    });
  });
  return {d_attn, dv.to(v.scalar_type())};
}

}  // namespace natbench
