// Host API of the neighborhood-attention ops (implemented per device, registered in bindings.cpp).
#pragma once

#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>

#include <tuple>
#include <vector>

#include "na_geometry.h"

namespace natbench {

using IntList = std::vector<int64_t>;
using BoolList = c10::List<bool>;  // std::vector<bool> cannot be registered

// The geometry lists' lengths against the problem's rank (the CPU and CUDA host APIs both check).
inline void check_geometry_lists(int64_t rank, const IntList& kernel, const IntList& dilation,
                                 const IntList& stride, const BoolList& causal) {
  TORCH_CHECK(static_cast<int64_t>(kernel.size()) == rank && static_cast<int64_t>(dilation.size()) == rank &&
                  static_cast<int64_t>(stride.size()) == rank && static_cast<int64_t>(causal.size()) == rank,
              "kernel_size, dilation, stride and is_causal need ", rank, " entries each");
}

// Spatial axis d of a [B, *spatial, H, D] tensor, checked against the geometry lists.
inline Axis checked_axis(const at::Tensor& x, int64_t d, const IntList& kernel, const IntList& dilation,
                         const IntList& stride, const BoolList& causal) {
  const int64_t length = x.size(d + 1);
  TORCH_CHECK(kernel[d] >= 1 && dilation[d] >= 1 && kernel[d] * dilation[d] <= length,
              "axis ", d, ": kernel_size ", kernel[d], " x dilation ", dilation[d], " > length ", length);
  TORCH_CHECK(stride[d] >= 1 && stride[d] <= kernel[d], "axis ", d, ": stride ", stride[d],
              " is outside 1..kernel_size ", kernel[d]);
  return Axis{length, kernel[d], dilation[d], stride[d], causal.get(d)};
}

std::tuple<at::Tensor, at::Tensor> fused_forward_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& rpb,
    IntList kernel_size, IntList dilation, IntList stride, BoolList is_causal, double scale);

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>> fused_backward_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& rpb,
    const at::Tensor& out, const at::Tensor& lse, const at::Tensor& dout, IntList kernel_size,
    IntList dilation, IntList stride, BoolList is_causal, double scale);

at::Tensor qk_rpb_cpu(const at::Tensor& q, const at::Tensor& k, const std::optional<at::Tensor>& rpb,
                      IntList kernel_size, IntList dilation, IntList stride, BoolList is_causal,
                      double scale);

std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>> qk_rpb_backward_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& d_logits, bool has_rpb,
    IntList kernel_size, IntList dilation, IntList stride, BoolList is_causal, double scale);

at::Tensor av_cpu(const at::Tensor& attn, const at::Tensor& v, IntList kernel_size,
                  IntList dilation, IntList stride, BoolList is_causal);

std::tuple<at::Tensor, at::Tensor> av_backward_cpu(const at::Tensor& attn, const at::Tensor& v,
                                                   const at::Tensor& dout, IntList kernel_size,
                                                   IntList dilation, IntList stride,
                                                   BoolList is_causal);

// The same ops on CUDA (csrc/cuda/na_cuda.cpp), compiled when torch has CUDA.
std::tuple<at::Tensor, at::Tensor> fused_forward_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& rpb,
    IntList kernel_size, IntList dilation, IntList stride, BoolList is_causal, double scale);

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>> fused_backward_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const std::optional<at::Tensor>& rpb,
    const at::Tensor& out, const at::Tensor& lse, const at::Tensor& dout, IntList kernel_size,
    IntList dilation, IntList stride, BoolList is_causal, double scale);

at::Tensor qk_rpb_cuda(const at::Tensor& q, const at::Tensor& k, const std::optional<at::Tensor>& rpb,
                       IntList kernel_size, IntList dilation, IntList stride, BoolList is_causal,
                       double scale);

std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>> qk_rpb_backward_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& d_logits, bool has_rpb,
    IntList kernel_size, IntList dilation, IntList stride, BoolList is_causal, double scale);

at::Tensor av_cuda(const at::Tensor& attn, const at::Tensor& v, IntList kernel_size,
                   IntList dilation, IntList stride, BoolList is_causal);

std::tuple<at::Tensor, at::Tensor> av_backward_cuda(const at::Tensor& attn, const at::Tensor& v,
                                                    const at::Tensor& dout, IntList kernel_size,
                                                    IntList dilation, IntList stride,
                                                    BoolList is_causal);

}  // namespace natbench
