// The CPU host API's shared helpers: the geometry from checked tensors, dtype dispatch
// helpers and workspaces. Included by the translation units of csrc/cpu/.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>

#include "../include/na_ops.h"
#include "na_kernels.h"

namespace natbench {
namespace host {

// The spatial axes of a [B, *spatial, H, D] tensor that its op's checks passed.
template <int R>
Geometry<R> geometry(const at::Tensor& x, const IntList& kernel, const IntList& dilation,
                     const IntList& stride, const BoolList& causal) {
  std::array<Axis, R> axes;
  for (int d = 0; d < R; ++d) axes[d] = checks::axis(x, d, kernel, dilation, stride, causal);
  return Geometry<R>(axes);
}

inline Shape shape_of(const at::Tensor& q, const at::Tensor& v) {
  return Shape{q.size(0), q.size(-2), q.size(-1), v.size(-1)};
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

template <typename T>
const T* maybe(const std::optional<at::Tensor>& t) {
  return t.has_value() ? t->data_ptr<T>() : nullptr;
}

// The fused kernels read every input in the accumulation type (no copy for float and double).
inline at::Tensor in_acc(const at::Tensor& x) { return x.to(checks::acc_dtype(x)).contiguous(); }

// The bias table as [H, bias_size + kBiasPad] in the accumulation type: a zero tail per head keeps
// the kernels' full-width vector loads inside it.
inline std::optional<at::Tensor> padded_bias(const std::optional<at::Tensor>& rpb, const at::Tensor& q) {
  if (!rpb.has_value()) return rpb;
  const int64_t heads = rpb->size(0), size = rpb->numel() / heads;
  auto table = at::zeros({heads, size + kBiasPad}, q.options().dtype(checks::acc_dtype(q)));
  table.narrow(1, 0, size).copy_(rpb->reshape({heads, size}));
  return table;
}

inline std::optional<at::Tensor> contiguous(const std::optional<at::Tensor>& t) {
  if (!t.has_value()) return t;
  return t->contiguous();
}

// The packed copy of a [B, N, H, dim] tensor for the fused kernels, from torch's allocator
// (64-byte aligned) so that memory measurements see it.
template <typename A>
at::Tensor workspace(const Shape& shape, int64_t tokens, int64_t dim, const at::Tensor& like) {
  return at::empty({packed_size<A>(shape, tokens, dim)}, like.options());
}


}  // namespace host
}  // namespace natbench
