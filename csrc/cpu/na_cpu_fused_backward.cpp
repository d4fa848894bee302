// CPU host API of the fused backward. Apart from na_cpu.cpp so that the two build in parallel: at
// -O3 the backward is the larger half (80 s against 45 s on a 2-core machine).
#include "na_cpu_host.h"

namespace natbench {

using namespace host;

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>> fused_backward_cpu(
    const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_, const std::optional<at::Tensor>& rpb_,
    const at::Tensor& out_, const at::Tensor& lse_, const at::Tensor& dout_, IntList kernel,
    IntList dilation, IntList stride, BoolList causal, double scale) {
  checks::fused_backward(checks::kCpu, q_, k_, v_, rpb_, out_, lse_, dout_, kernel, dilation, stride, causal);
  auto q = in_acc(q_), k = in_acc(k_), v = in_acc(v_), out = in_acc(out_), dout = in_acc(dout_);
  auto lse = lse_.contiguous();
  auto rpb = padded_bias(rpb_, q_);
  auto dq = at::empty(q.sizes(), q.options());
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
        fused_backward<R, A, decltype(bytes)::value>(
            g, shape, q.data_ptr<A>(), k.data_ptr<A>(), v.data_ptr<A>(), maybe<A>(rpb),
            out.data_ptr<A>(), dout.data_ptr<A>(), lse.data_ptr<A>(), dq.data_ptr<A>(),
            dk.data_ptr<A>(), dv.data_ptr<A>(), rpb.has_value() ? drpb_acc.data_ptr<A>() : nullptr,
            static_cast<A>(scale), packed_keys.data_ptr<A>(), packed_values.data_ptr<A>());
      });
    });
    if (rpb.has_value()) drpb = drpb_acc.sum(0).view(rpb_->sizes()).to(rpb_->scalar_type());
  });
  return {dq.to(q_.scalar_type()), dk.to(q_.scalar_type()), dv.to(q_.scalar_type()), drpb};
}

}  // namespace natbench
