// Op registration only: schemas in the `natbench` namespace and their CPU implementations, plus
// the CUDA ones when the extension is built with NATBENCH_WITH_CUDA (torch with CUDA, and nvcc).
#include <torch/library.h>

#include "include/na_ops.h"

TORCH_LIBRARY(natbench, m) {
  const char* geometry = "int[] kernel_size, int[] dilation, int[] stride, bool[] is_causal";
  // The schema string lives until def() has parsed it (the end of each full expression).
  auto with = [&](const std::string& head, const std::string& tail) {
    return head + geometry + tail;
  };
  m.def(with("na_fused_forward(Tensor q, Tensor k, Tensor v, Tensor? rpb, ", ", float scale) -> (Tensor, Tensor)").c_str());
  m.def(with("na_fused_backward(Tensor q, Tensor k, Tensor v, Tensor? rpb, Tensor out, Tensor lse, Tensor dout, ",
             ", float scale) -> (Tensor, Tensor, Tensor, Tensor?)").c_str());
  m.def(with("na_qk_rpb(Tensor q, Tensor k, Tensor? rpb, ", ", float scale) -> Tensor").c_str());
  m.def(with("na_qk_rpb_backward(Tensor q, Tensor k, Tensor d_logits, bool has_rpb, ",
             ", float scale) -> (Tensor, Tensor, Tensor?)").c_str());
  m.def(with("na_av(Tensor attn, Tensor v, ", ") -> Tensor").c_str());
  m.def(with("na_av_backward(Tensor attn, Tensor v, Tensor dout, ", ") -> (Tensor, Tensor)").c_str());
}

TORCH_LIBRARY_IMPL(natbench, CPU, m) {
  m.impl("na_fused_forward", &natbench::fused_forward_cpu);
  m.impl("na_fused_backward", &natbench::fused_backward_cpu);
  m.impl("na_qk_rpb", &natbench::qk_rpb_cpu);
  m.impl("na_qk_rpb_backward", &natbench::qk_rpb_backward_cpu);
  m.impl("na_av", &natbench::av_cpu);
  m.impl("na_av_backward", &natbench::av_backward_cpu);
}

#ifdef NATBENCH_WITH_CUDA
TORCH_LIBRARY_IMPL(natbench, CUDA, m) {
  m.impl("na_fused_forward", &natbench::fused_forward_cuda);
  m.impl("na_fused_backward", &natbench::fused_backward_cuda);
  m.impl("na_qk_rpb", &natbench::qk_rpb_cuda);
  m.impl("na_qk_rpb_backward", &natbench::qk_rpb_backward_cuda);
  m.impl("na_av", &natbench::av_cuda);
  m.impl("na_av_backward", &natbench::av_backward_cuda);
}
#endif
