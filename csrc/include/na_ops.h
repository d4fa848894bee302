// Host API of the neighborhood-attention ops (implemented per device, registered in bindings.cpp).
#pragma once

#include <ATen/core/Tensor.h>

#include <tuple>

#include "na_checks.h"

namespace natbench {

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
