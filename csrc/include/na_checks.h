// The op boundary. torch.ops.natbench.* are public, so each op checks every input here before a
// kernel sees a pointer: the CPU and the CUDA host code call the same function of each op, with
// the Target that says what their kernels take. What passes is memory-safe for the kernels:
// shapes that agree with each other and with the geometry, one device, one dtype, no empty dim,
// and a bias table of exactly [heads, 2K-1, ...]. Any strides are accepted: the host code makes
// the tensors contiguous before their pointers are taken.
#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "na_geometry.h"

namespace natbench {

using IntList = std::vector<int64_t>;
using BoolList = c10::List<bool>;  // std::vector<bool> cannot be registered

namespace checks {

// What one device's kernels take.
struct Target {
  c10::DeviceType device;
  bool float64;           // whether the kernels run float64
  int64_t fused_max_dim;  // the fused kernels' largest head dim (0: no limit)
};

inline constexpr Target kCpu{c10::DeviceType::CPU, true, 0};

// The accumulation type of q's dtype, which the saved log-sum-exp has.
inline at::ScalarType acc_dtype(const at::Tensor& q) {
  return q.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// A dense tensor on the target's device with no empty dim.
inline void dense(const char* op, const char* name, const at::Tensor& t, const Target& target) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is an undefined tensor");
  TORCH_CHECK(t.layout() == at::kStrided, op, ": ", name, " must be a dense (strided) tensor, got layout ",
              t.layout());
  TORCH_CHECK(t.device().type() == target.device, op, ": ", name, " must be on ", target.device,
              ", got a tensor on ", t.device());
  TORCH_CHECK(t.numel() > 0, op, ": ", name, " has an empty dim ", t.sizes(),
              "; every dim must be at least 1");
}

// t, another input of the op: dense, on `like`'s device, of the given dtype and sizes.
inline void same_as(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like,
                    const Target& target, at::IntArrayRef sizes, at::ScalarType dtype) {
  dense(op, name, t, target);
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " is on ", t.device(), ", the other inputs on ",
              like.device(), "; put every input on one device");
  TORCH_CHECK(t.sizes() == sizes, op, ": ", name, " must have shape ", sizes, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " must be ", dtype, ", got ", t.scalar_type());
}

// x, the op's [B, *spatial, heads, D] input that the others are checked against.
inline void leading(const char* op, const char* name, const at::Tensor& x, const Target& target) {
  dense(op, name, x, target);
  TORCH_CHECK(x.dim() >= 4 && x.dim() <= 6, op, ": ", name,
              " must be [B, *spatial, heads, D] with 1 to 3 spatial axes (4 to 6 dims), got shape ", x.sizes());
  const auto t = x.scalar_type();
  const bool supported = t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || (target.float64 && t == at::kDouble);
  TORCH_CHECK(supported, op, ": the ", target.device, " kernels run float32, float16, bfloat16",
              target.float64 ? " and float64" : "", "; ", name, " is ", t);
}

// The sizes of x with its last dim replaced.
inline std::vector<int64_t> with_last(const at::Tensor& x, int64_t last) {
  std::vector<int64_t> sizes(x.sizes().begin(), x.sizes().end());
  sizes.back() = last;
  return sizes;
}

// kernel_size, dilation, stride and is_causal against the spatial axes of x: one entry per axis,
// kernel_size x dilation within the axis, stride in 1..kernel_size. Written without the product
// kernel x dilation, which a huge value could overflow.
inline void geometry(const char* op, const at::Tensor& x, const IntList& kernel, const IntList& dilation,
                     const IntList& stride, const BoolList& causal) {
  const int64_t rank = x.dim() - 3;
  TORCH_CHECK(static_cast<int64_t>(kernel.size()) == rank && static_cast<int64_t>(dilation.size()) == rank &&
                  static_cast<int64_t>(stride.size()) == rank && static_cast<int64_t>(causal.size()) == rank,
              op, ": kernel_size, dilation, stride and is_causal need ", rank, " entries each (one per spatial axis), got ",
              kernel.size(), ", ", dilation.size(), ", ", stride.size(), " and ", causal.size());
  for (int64_t d = 0; d < rank; ++d) {
    const int64_t length = x.size(d + 1);
    TORCH_CHECK(kernel[d] >= 1 && dilation[d] >= 1, op, ": axis ", d, ": kernel_size ", kernel[d],
                " and dilation ", dilation[d], " must be at least 1");
    TORCH_CHECK(dilation[d] <= length && kernel[d] <= length / dilation[d], op, ": axis ", d, ": kernel_size ",
                kernel[d], " x dilation ", dilation[d], " > length ", length);
    TORCH_CHECK(stride[d] >= 1 && stride[d] <= kernel[d], op, ": axis ", d, ": stride ", stride[d],
                " is outside 1..kernel_size ", kernel[d]);
  }
}

// The spatial axis d of a checked x (geometry() passed).
inline Axis axis(const at::Tensor& x, int64_t d, const IntList& kernel, const IntList& dilation,
                 const IntList& stride, const BoolList& causal) {
  return Axis{x.size(d + 1), kernel[d], dilation[d], stride[d], causal.get(d)};
}

inline int64_t tokens(const at::Tensor& x) {
  int64_t n = 1;
  for (int64_t d = 1; d + 2 < x.dim(); ++d) n *= x.size(d);
  return n;
}

inline int64_t window_keys(const IntList& kernel) {
  int64_t n = 1;
  for (auto k : kernel) n *= k;
  return n;
}

// The relative positional bias: [heads, 2K-1 per axis] on q's device, in q's dtype.
inline void bias(const char* op, const std::optional<at::Tensor>& rpb, const at::Tensor& q,
                 const IntList& kernel, const Target& target) {
  if (!rpb.has_value()) return;
  std::vector<int64_t> table{q.size(-2)};
  for (auto k : kernel) table.push_back(2 * k - 1);
  same_as(op, "rpb", *rpb, q, target, table, q.scalar_type());
}

// q, k and v of the fused and QK ops: k of q's shape, v of q's in all but its head dim.
inline void qkv(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor* v,
                const Target& target) {
  leading(op, "q", q, target);
  same_as(op, "k", k, q, target, q.sizes(), q.scalar_type());
  if (v == nullptr) return;
  dense(op, "v", *v, target);
  TORCH_CHECK(v->dim() == q.dim(), op, ": v must be [B, *spatial, heads, Dv] like q ", q.sizes(), ", got ", v->sizes());
  same_as(op, "v", *v, q, target, with_last(q, v->size(-1)), q.scalar_type());
}

inline void fused_dims(const char* op, const at::Tensor& q, const at::Tensor& v, const Target& target) {
  if (target.fused_max_dim == 0) return;
  TORCH_CHECK(q.size(-1) <= target.fused_max_dim && v.size(-1) <= target.fused_max_dim, op, ": the fused ",
              target.device, " kernel takes head dims up to ", target.fused_max_dim, ", got D = ", q.size(-1),
              " and Dv = ", v.size(-1), "; the unfused ops (na_qk_rpb, na_av) take any");
}

// [B, heads, N, prod(kernel_size)]: the attention matrix and its gradients.
inline std::vector<int64_t> attention_shape(const at::Tensor& x, const IntList& kernel) {
  return {x.size(0), x.size(-2), tokens(x), window_keys(kernel)};
}

// ---- one function per op ----

// The inputs the fused forward and backward share.
inline void fused_inputs(const char* op, const Target& target, const at::Tensor& q, const at::Tensor& k,
                         const at::Tensor& v, const std::optional<at::Tensor>& rpb, const IntList& kernel,
                         const IntList& dilation, const IntList& stride, const BoolList& causal) {
  qkv(op, q, k, &v, target);
  geometry(op, q, kernel, dilation, stride, causal);
  bias(op, rpb, q, kernel, target);
  fused_dims(op, q, v, target);
}

inline void fused_forward(const Target& target, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const std::optional<at::Tensor>& rpb, const IntList& kernel, const IntList& dilation,
                          const IntList& stride, const BoolList& causal) {
  fused_inputs("na_fused_forward", target, q, k, v, rpb, kernel, dilation, stride, causal);
}

inline void fused_backward(const Target& target, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                           const std::optional<at::Tensor>& rpb, const at::Tensor& out, const at::Tensor& lse,
                           const at::Tensor& dout, const IntList& kernel, const IntList& dilation,
                           const IntList& stride, const BoolList& causal) {
  const char* op = "na_fused_backward";
  fused_inputs(op, target, q, k, v, rpb, kernel, dilation, stride, causal);
  same_as(op, "out", out, q, target, v.sizes(), q.scalar_type());
  same_as(op, "dout", dout, q, target, v.sizes(), q.scalar_type());
  same_as(op, "lse", lse, q, target, {q.size(0), q.size(-2), tokens(q)}, acc_dtype(q));
}

inline void qk_rpb(const Target& target, const at::Tensor& q, const at::Tensor& k,
                   const std::optional<at::Tensor>& rpb, const IntList& kernel, const IntList& dilation,
                   const IntList& stride, const BoolList& causal) {
  const char* op = "na_qk_rpb";
  qkv(op, q, k, nullptr, target);
  geometry(op, q, kernel, dilation, stride, causal);
  bias(op, rpb, q, kernel, target);
}

inline void qk_rpb_backward(const Target& target, const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& d_logits, const IntList& kernel, const IntList& dilation,
                            const IntList& stride, const BoolList& causal) {
  const char* op = "na_qk_rpb_backward";
  qkv(op, q, k, nullptr, target);
  geometry(op, q, kernel, dilation, stride, causal);
  same_as(op, "d_logits", d_logits, q, target, attention_shape(q, kernel), q.scalar_type());
}

inline void av(const Target& target, const at::Tensor& attn, const at::Tensor& v, const IntList& kernel,
               const IntList& dilation, const IntList& stride, const BoolList& causal) {
  const char* op = "na_av";
  leading(op, "v", v, target);
  geometry(op, v, kernel, dilation, stride, causal);
  same_as(op, "attn", attn, v, target, attention_shape(v, kernel), v.scalar_type());
}

inline void av_backward(const Target& target, const at::Tensor& attn, const at::Tensor& v, const at::Tensor& dout,
                        const IntList& kernel, const IntList& dilation, const IntList& stride,
                        const BoolList& causal) {
  const char* op = "na_av_backward";
  leading(op, "v", v, target);
  geometry(op, v, kernel, dilation, stride, causal);
  same_as(op, "attn", attn, v, target, attention_shape(v, kernel), v.scalar_type());
  same_as(op, "dout", dout, v, target, v.sizes(), v.scalar_type());
}

}  // namespace checks
}  // namespace natbench
