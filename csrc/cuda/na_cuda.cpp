// CUDA host API of the ops: the op's checks (csrc/include/na_checks.h), allocation, and the call
// into the raw-pointer launchers of na_kernels.cu on torch's current stream. Registered in
// bindings.cpp.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../include/na_ops.h"
#include "na_cuda.h"

namespace natbench {
namespace {

cuda::DType dtype_of(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat: return cuda::DType::f32;
    case at::kHalf: return cuda::DType::f16;
    case at::kBFloat16: return cuda::DType::bf16;
    default: TORCH_CHECK(false, "the CUDA kernels run float32, float16 and bfloat16, got ", x.scalar_type());
  }
}

constexpr checks::Target kCuda{c10::DeviceType::CUDA, false, cuda::kFusedMaxDim};

// The problem of a [B, *spatial, H, D] tensor that its op's checks passed.
cuda::Problem problem(const at::Tensor& x, int64_t dim_v, const IntList& kernel, const IntList& dilation,
                      const IntList& stride, const BoolList& causal) {
  const int64_t rank = x.dim() - 3;
  cuda::Problem p{};
  p.rank = static_cast<int>(rank);
  for (int64_t d = 0; d < rank; ++d) p.axes[d] = checks::axis(x, d, kernel, dilation, stride, causal);
  p.batch = x.size(0);
  p.heads = x.size(-2);
  p.dim = x.size(-1);
  p.dim_v = dim_v;
  return p;
}

// The fused kernels' grid holds a bounded number of queries (na_cuda.h).
void check_fused_grid(const char* op, const at::Tensor& q) {
  const int64_t queries = q.size(0) * q.size(-2) * checks::tokens(q);
  TORCH_CHECK(queries <= cuda::kFusedMaxQueries, op, ": the fused CUDA kernel takes at most ",
              cuda::kFusedMaxQueries, " (batch x heads x tokens) queries, got ", queries,
              "; split the batch");
}

void check(cudaError_t error, const char* what) {
  TORCH_CHECK(error == cudaSuccess, what, ": ", cudaGetErrorString(error));
}

const void* maybe(const std::optional<at::Tensor>& t) { return t.has_value() ? t->data_ptr() : nullptr; }

at::Tensor f32_zeros(const at::Tensor& like) { return at::zeros(like.sizes(), like.options().dtype(at::kFloat)); }

cudaStream_t stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

std::optional<at::Tensor> bias_grad(bool has_rpb, const at::Tensor& q, const IntList& kernel) {
  if (!has_rpb) return std::nullopt;
  std::vector<int64_t> table{q.size(-2)};
  for (auto k : kernel) table.push_back(2 * k - 1);
  return at::zeros(table, q.options().dtype(at::kFloat));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> fused_forward_cuda(
    const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_, const std::optional<at::Tensor>& rpb_,
    IntList kernel, IntList dilation, IntList stride, BoolList causal, double scale) {
  checks::fused_forward(kCuda, q_, k_, v_, rpb_, kernel, dilation, stride, causal);
  check_fused_grid("na_fused_forward", q_);
  c10::cuda::CUDAGuard guard(q_.device());
  auto q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
  std::optional<at::Tensor> rpb = rpb_.has_value() ? std::optional<at::Tensor>(rpb_->contiguous()) : std::nullopt;
  const auto p = problem(q, v.size(-1), kernel, dilation, stride, causal);
  auto out = at::empty(v.sizes(), v.options());
  auto lse = at::empty({q.size(0), q.size(-2), checks::tokens(q)}, q.options().dtype(at::kFloat));
  check(cuda::fused_forward(p, dtype_of(q), q.data_ptr(), k.data_ptr(), v.data_ptr(), maybe(rpb),
                            out.data_ptr(), lse.data_ptr<float>(), static_cast<float>(scale), stream()),
        "na_fused_forward");
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>> fused_backward_cuda(
    const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& v_, const std::optional<at::Tensor>& rpb_,
    const at::Tensor& out_, const at::Tensor& lse_, const at::Tensor& dout_, IntList kernel,
    IntList dilation, IntList stride, BoolList causal, double scale) {
  checks::fused_backward(kCuda, q_, k_, v_, rpb_, out_, lse_, dout_, kernel, dilation, stride, causal);
  check_fused_grid("na_fused_backward", q_);
  c10::cuda::CUDAGuard guard(q_.device());
  auto q = q_.contiguous(), k = k_.contiguous(), v = v_.contiguous();
  auto out = out_.contiguous(), lse = lse_.contiguous(), dout = dout_.contiguous();
  std::optional<at::Tensor> rpb = rpb_.has_value() ? std::optional<at::Tensor>(rpb_->contiguous()) : std::nullopt;
  const auto p = problem(q, v.size(-1), kernel, dilation, stride, causal);
  auto dq = at::empty(q.sizes(), q.options());
  auto dk = f32_zeros(k), dv = f32_zeros(v);
  auto drpb = bias_grad(rpb.has_value(), q, kernel);
  check(cuda::fused_backward(p, dtype_of(q), q.data_ptr(), k.data_ptr(), v.data_ptr(), maybe(rpb),
                             out.data_ptr(), lse.data_ptr<float>(), dout.data_ptr(), dq.data_ptr(),
                             dk.data_ptr<float>(), dv.data_ptr<float>(),
                             drpb.has_value() ? drpb->data_ptr<float>() : nullptr,
                             static_cast<float>(scale), stream()),
        "na_fused_backward");
  if (drpb.has_value()) drpb = drpb->to(rpb->scalar_type());
  return {dq, dk.to(q.scalar_type()), dv.to(q.scalar_type()), drpb};
}

at::Tensor qk_rpb_cuda(const at::Tensor& q_, const at::Tensor& k_, const std::optional<at::Tensor>& rpb_,
                       IntList kernel, IntList dilation, IntList stride, BoolList causal, double scale) {
  checks::qk_rpb(kCuda, q_, k_, rpb_, kernel, dilation, stride, causal);
  c10::cuda::CUDAGuard guard(q_.device());
  auto q = q_.contiguous(), k = k_.contiguous();
  std::optional<at::Tensor> rpb = rpb_.has_value() ? std::optional<at::Tensor>(rpb_->contiguous()) : std::nullopt;
  const auto p = problem(q, q.size(-1), kernel, dilation, stride, causal);
  auto logits = at::empty({q.size(0), q.size(-2), checks::tokens(q), checks::window_keys(kernel)}, q.options());
  check(cuda::qk_rpb(p, dtype_of(q), q.data_ptr(), k.data_ptr(), maybe(rpb), logits.data_ptr(),
                     static_cast<float>(scale), stream()),
        "na_qk_rpb");
  return logits;
}

std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>> qk_rpb_backward_cuda(
    const at::Tensor& q_, const at::Tensor& k_, const at::Tensor& d_logits_, bool has_rpb,
    IntList kernel, IntList dilation, IntList stride, BoolList causal, double scale) {
  checks::qk_rpb_backward(kCuda, q_, k_, d_logits_, kernel, dilation, stride, causal);
  c10::cuda::CUDAGuard guard(q_.device());
  auto q = q_.contiguous(), k = k_.contiguous(), d_logits = d_logits_.contiguous();
  const auto p = problem(q, q.size(-1), kernel, dilation, stride, causal);
  auto dq = at::empty(q.sizes(), q.options());
  auto dk = f32_zeros(k);
  auto drpb = bias_grad(has_rpb, q, kernel);
  check(cuda::qk_rpb_backward(p, dtype_of(q), q.data_ptr(), k.data_ptr(), d_logits.data_ptr(),
                              dq.data_ptr(), dk.data_ptr<float>(),
                              drpb.has_value() ? drpb->data_ptr<float>() : nullptr,
                              static_cast<float>(scale), stream()),
        "na_qk_rpb_backward");
  if (drpb.has_value()) drpb = drpb->to(q.scalar_type());
  return {dq, dk.to(q.scalar_type()), drpb};
}

at::Tensor av_cuda(const at::Tensor& attn_, const at::Tensor& v_, IntList kernel, IntList dilation,
                   IntList stride, BoolList causal) {
  checks::av(kCuda, attn_, v_, kernel, dilation, stride, causal);
  c10::cuda::CUDAGuard guard(v_.device());
  auto attn = attn_.contiguous(), v = v_.contiguous();
  const auto p = problem(v, v.size(-1), kernel, dilation, stride, causal);
  auto out = at::empty(v.sizes(), v.options());
  check(cuda::av(p, dtype_of(v), attn.data_ptr(), v.data_ptr(), out.data_ptr(), stream()), "na_av");
  return out;
}

std::tuple<at::Tensor, at::Tensor> av_backward_cuda(const at::Tensor& attn_, const at::Tensor& v_,
                                                    const at::Tensor& dout_, IntList kernel,
                                                    IntList dilation, IntList stride, BoolList causal) {
  checks::av_backward(kCuda, attn_, v_, dout_, kernel, dilation, stride, causal);
  c10::cuda::CUDAGuard guard(v_.device());
  auto attn = attn_.contiguous(), v = v_.contiguous(), dout = dout_.contiguous();
  const auto p = problem(v, v.size(-1), kernel, dilation, stride, causal);
  auto d_attn = at::empty(attn.sizes(), attn.options());
  auto dv = f32_zeros(v);
  check(cuda::av_backward(p, dtype_of(v), attn.data_ptr(), v.data_ptr(), dout.data_ptr(),
                          d_attn.data_ptr(), dv.data_ptr<float>(), stream()),
        "na_av_backward");
  return {d_attn, dv.to(v.scalar_type())};
}

}  // namespace natbench
