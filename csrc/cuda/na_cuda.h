// Host API of the CUDA kernels: raw pointers, sizes and a stream; no torch headers, so that
// `make cuda-check` compiles every kernel with nvcc alone on a machine without a GPU.
//
// Layouts (all contiguous): q, k, v, out, dq, dk, dv [B, *spatial, H, D]; logits, attn
// [B, H, N, prod(kernel_size)] with the slots past a causal window at -inf (zero in gradients);
// lse [B, H, N]; rpb [H, *(2K-1)]. Accumulators (dk, dv, drpb) are float32 and zeroed by the
// caller: several queries add to one key.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../include/na_geometry.h"

namespace natbench {
namespace cuda {

enum class DType { f32, f16, bf16 };

// The fused kernels keep a query's head dim in registers: a warp's 32 lanes, 8 values each.
constexpr int64_t kFusedMaxDim = 256;

// The fused kernels run one warp per query, kFusedQueriesPerBlock to a block, and one block per
// kFusedQueriesPerBlock queries on a one-dimensional grid of at most 2^31 - 1 blocks.
constexpr int64_t kFusedQueriesPerBlock = 4;
constexpr int64_t kFusedMaxQueries = kFusedQueriesPerBlock * ((int64_t(1) << 31) - 1);

struct Problem {
  int rank;
  Axis axes[3];
  int64_t batch, heads, dim, dim_v;
};

cudaError_t fused_forward(const Problem& p, DType t, const void* q, const void* k, const void* v,
                          const void* rpb, void* out, float* lse, float scale, cudaStream_t s);

cudaError_t fused_backward(const Problem& p, DType t, const void* q, const void* k, const void* v,
                           const void* rpb, const void* out, const float* lse, const void* dout,
                           void* dq, float* dk, float* dv, float* drpb, float scale,
                           cudaStream_t s);

cudaError_t qk_rpb(const Problem& p, DType t, const void* q, const void* k, const void* rpb,
                   void* logits, float scale, cudaStream_t s);

cudaError_t qk_rpb_backward(const Problem& p, DType t, const void* q, const void* k,
                            const void* d_logits, void* dq, float* dk, float* drpb, float scale,
                            cudaStream_t s);

cudaError_t av(const Problem& p, DType t, const void* attn, const void* v, void* out,
               cudaStream_t s);

cudaError_t av_backward(const Problem& p, DType t, const void* attn, const void* v,
                        const void* dout, void* d_attn, float* dv, cudaStream_t s);

}  // namespace cuda
}  // namespace natbench
