// CPU host API: the op's checks (csrc/include/na_checks.h), then dispatch over rank and dtype to the kernels: the fused
// forward and the unfused kernels here, the fused backward in na_cpu_fused_backward.cpp.
#include "na_cpu_host.h"

namespace natbench {

using namespace host;

std::tuple<at::Tensor, at::Tensor> fused_forward_cpu(
    const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_, const std::optional<at::Tensor>& rpb_,
    IntList kernel, IntList dilation, IntList stride, BoolList causal, double scale) {
  checks::fused_forward(checks::kCpu, q_, k_, v_, rpb_, kernel, dilation, stride, causal);
  auto q = in_acc(q_), k = in_acc(k_), v = in_acc(v_);
  auto rpb = padded_bias(rpb_, q_);
  auto out = at::empty(v.sizes(), v.options());
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
        fused_forward<R, A, decltype(bytes)::value>(g, shape, q.data_ptr<A>(), k.data_ptr<A>(), v.data_ptr<A>(),
                                                    maybe<A>(rpb), out.data_ptr<A>(), lse.data_ptr<A>(),
                                                    static_cast<A>(scale), packed_keys.data_ptr<A>());
      });
    });
  });
  return {out.to(v_.scalar_type()), lse};
}

at::Tensor qk_rpb_cpu(const at::Tensor& q_, const at::Tensor& k_, const std::optional<at::Tensor>& rpb_,
                      IntList kernel, IntList dilation, IntList stride, BoolList causal, double scale) {
  checks::qk_rpb(checks::kCpu, q_, k_, rpb_, kernel, dilation, stride, causal);
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
  checks::qk_rpb_backward(checks::kCpu, q_, k_, d_logits_, kernel, dilation, stride, causal);
  auto q = q_.contiguous(), k = k_.contiguous(), d_logits = d_logits_.contiguous();
  auto dq = at::empty(q.sizes(), q.options());
  auto dk = at::zeros(k.sizes(), k.options().dtype(checks::acc_dtype(q)));
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
  checks::av(checks::kCpu, attn_, v_, kernel, dilation, stride, causal);
  auto attn = attn_.contiguous(), v = v_.contiguous();
  auto out = at::empty(v.sizes(), v.options());
  with_rank(v.dim() - 3, [&](auto rank) {
    constexpr int R = decltype(rank)::value;
    const auto g = geometry<R>(v, kernel, dilation, stride, causal);
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
  checks::av_backward(checks::kCpu, attn_, v_, dout_, kernel, dilation, stride, causal);
  auto attn = attn_.contiguous(), v = v_.contiguous(), dout = dout_.contiguous();
  auto d_attn = at::empty(attn.sizes(), attn.options());
  auto dv = at::zeros(v.sizes(), v.options().dtype(checks::acc_dtype(v)));
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
