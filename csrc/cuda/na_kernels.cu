// CUDA neighborhood-attention kernels (declared in na_cuda.h). float32 accumulation for every
// dtype; the window of each query comes from the same axis_window as the CPU kernels.
//
// Simple designs, compile-checked for sm_80 and sm_90 but not yet run on a GPU (docs/cuda.md):
// - unfused (the NAT v0.11 extension's design): one thread per output element; the backward kernels add
//   to keys with float atomics instead of v0.11's inverse-neighborhood gathers.
// - fused: one warp per query, lanes split the head dim, online softmax over the window in
//   registers. No shared-memory tiles of keys and no tensor cores yet.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>

#include "na_cuda.h"

namespace natbench {
namespace cuda {
namespace {

constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = static_cast<int>(kFusedQueriesPerBlock);
constexpr int kThreads = 256;
constexpr int kMaxPerLane = 8;
static_assert(kWarp * kMaxPerLane == kFusedMaxDim, "the host checks head dims against kFusedMaxDim");

template <typename T> __device__ inline float load(const T* p, int64_t i);
template <> __device__ inline float load(const float* p, int64_t i) { return p[i]; }
template <> __device__ inline float load(const __half* p, int64_t i) { return __half2float(p[i]); }
template <> __device__ inline float load(const __nv_bfloat16* p, int64_t i) { return __bfloat162float(p[i]); }

template <typename T> __device__ inline void store(T* p, int64_t i, float x);
template <> __device__ inline void store(float* p, int64_t i, float x) { p[i] = x; }
template <> __device__ inline void store(__half* p, int64_t i, float x) { p[i] = __float2half(x); }
template <> __device__ inline void store(__nv_bfloat16* p, int64_t i, float x) { p[i] = __float2bfloat16(x); }

__host__ __device__ inline int64_t tokens(const Problem& p) {
  int64_t n = 1;
  for (int d = 0; d < p.rank; ++d) n *= p.axes[d].length;
  return n;
}

__host__ __device__ inline int64_t window_keys(const Problem& p) {
  int64_t n = 1;
  for (int d = 0; d < p.rank; ++d) n *= p.axes[d].kernel;
  return n;
}

__host__ __device__ inline int64_t bias_size(const Problem& p) {
  int64_t n = 1;
  for (int d = 0; d < p.rank; ++d) n *= 2 * p.axes[d].kernel - 1;
  return n;
}

// The per-axis windows of one query (flat token n) and how many keys they hold together.
struct Window {
  AxisWindow axis[3];
  int64_t count;
};

__device__ inline Window window_of(const Problem& p, int64_t n) {
  Window w;
  w.count = 1;
  for (int d = p.rank - 1; d >= 0; --d) {
    w.axis[d] = axis_window(p.axes[d], n % p.axes[d].length);
    n /= p.axes[d].length;
    w.count *= w.axis[d].count;
  }
  return w;
}

// Slot j of a window (row-major over the per-axis windows, the CPU kernels' order): its flat
// key token and its index into the bias table.
__device__ inline void slot_at(const Problem& p, const Window& w, int64_t j, int64_t& key,
                               int64_t& bias) {
  key = 0;
  bias = 0;
  int64_t token_stride = 1, bias_stride = 1;
  for (int d = p.rank - 1; d >= 0; --d) {
    const int64_t t = j % w.axis[d].count;
    j /= w.axis[d].count;
    key += (w.axis[d].first + t * p.axes[d].dilation) * token_stride;
    bias += (w.axis[d].bias0 + t) * bias_stride;
    token_stride *= p.axes[d].length;
    bias_stride *= 2 * p.axes[d].kernel - 1;
  }
}

// An item is one (b, h, n); rows of q/k/v are [B, N, H, D] with flat index (b * N + n) * H + h.
struct Item {
  int64_t b, h, n;
};

__device__ inline Item item_of(const Problem& p, int64_t item, int64_t n_tokens) {
  return {item / (p.heads * n_tokens), (item / n_tokens) % p.heads, item % n_tokens};
}

__device__ inline int64_t row_of(const Problem& p, const Item& it, int64_t token, int64_t n_tokens) {
  return (it.b * n_tokens + token) * p.heads + it.h;
}

__device__ inline float warp_sum(float x) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

// ---- unfused: the NAT v0.11 extension's design ----

// Grid-stride loop over (item, inner) for inner in [0, inner_size): body(idx, item, inner, it, w)
// with the item's (b, h, n) and its window. idx is the flat index into [B, H, N, inner_size].
template <typename Body>
__device__ inline void for_each_element(const Problem& p, int64_t inner_size, Body body) {
  const int64_t n_tokens = tokens(p), total = p.batch * p.heads * n_tokens * inner_size;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total;
       idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t item = idx / inner_size;
    const Item it = item_of(p, item, n_tokens);
    body(idx, item, idx % inner_size, it, window_of(p, it.n));
  }
}

template <typename T>
__global__ void qk_rpb_kernel(Problem p, const T* q, const T* k, const T* rpb, T* logits, float scale) {
  const int64_t n_tokens = tokens(p);
  for_each_element(p, window_keys(p), [&](int64_t idx, int64_t, int64_t j, const Item& it, const Window& w) {
    if (j >= w.count) {
      store(logits, idx, -INFINITY);
      return;
    }
    int64_t key, bias;
    slot_at(p, w, j, key, bias);
    const int64_t qrow = row_of(p, it, it.n, n_tokens) * p.dim, krow = row_of(p, it, key, n_tokens) * p.dim;
    float x = 0.f;
    for (int64_t d = 0; d < p.dim; ++d) x += load(q, qrow + d) * load(k, krow + d);
    x *= scale;
    if (rpb) x += load(rpb, it.h * bias_size(p) + bias);
    store(logits, idx, x);
  });
}

template <typename T>
__global__ void av_kernel(Problem p, const T* attn, const T* v, T* out) {
  const int64_t n_tokens = tokens(p), kn = window_keys(p);
  for_each_element(p, p.dim_v, [&](int64_t, int64_t item, int64_t d, const Item& it, const Window& w) {
    float acc = 0.f;
    for (int64_t j = 0; j < w.count; ++j) {
      int64_t key, bias;
      slot_at(p, w, j, key, bias);
      acc += load(attn, item * kn + j) * load(v, row_of(p, it, key, n_tokens) * p.dim_v + d);
    }
    store(out, row_of(p, it, it.n, n_tokens) * p.dim_v + d, acc);
  });
}

// d_attn[item, j] = dout_n . v_key (zero past a causal window).
template <typename T>
__global__ void av_backward_attn_kernel(Problem p, const T* v, const T* dout, T* d_attn) {
  const int64_t n_tokens = tokens(p);
  for_each_element(p, window_keys(p), [&](int64_t idx, int64_t, int64_t j, const Item& it, const Window& w) {
    float x = 0.f;
    if (j < w.count) {
      int64_t key, bias;
      slot_at(p, w, j, key, bias);
      const int64_t orow = row_of(p, it, it.n, n_tokens) * p.dim_v, vrow = row_of(p, it, key, n_tokens) * p.dim_v;
      for (int64_t d = 0; d < p.dim_v; ++d) x += load(dout, orow + d) * load(v, vrow + d);
    }
    store(d_attn, idx, x);
  });
}

// dv_key += attn[item, j] * dout_n, one thread per (item, d).
template <typename T>
__global__ void av_backward_v_kernel(Problem p, const T* attn, const T* dout, float* dv) {
  const int64_t n_tokens = tokens(p), kn = window_keys(p);
  for_each_element(p, p.dim_v, [&](int64_t, int64_t item, int64_t d, const Item& it, const Window& w) {
    const float g = load(dout, row_of(p, it, it.n, n_tokens) * p.dim_v + d);
    for (int64_t j = 0; j < w.count; ++j) {
      int64_t key, bias;
      slot_at(p, w, j, key, bias);
      atomicAdd(dv + row_of(p, it, key, n_tokens) * p.dim_v + d, load(attn, item * kn + j) * g);
    }
  });
}

// dq_n = scale * sum_j dl_j k_key; dk_key += scale * dl_j q_n; drpb[h, bias_j] += dl_j.
template <typename T>
__global__ void qk_rpb_backward_kernel(Problem p, const T* q, const T* k, const T* d_logits, T* dq,
                                       float* dk, float* drpb, float scale) {
  const int64_t n_tokens = tokens(p), kn = window_keys(p);
  for_each_element(p, p.dim, [&](int64_t, int64_t item, int64_t d, const Item& it, const Window& w) {
    const int64_t qrow = row_of(p, it, it.n, n_tokens) * p.dim;
    const float qd = scale * load(q, qrow + d);
    float acc = 0.f;
    for (int64_t j = 0; j < w.count; ++j) {
      int64_t key, bias;
      slot_at(p, w, j, key, bias);
      const float dl = load(d_logits, item * kn + j);
      const int64_t krow = row_of(p, it, key, n_tokens) * p.dim;
      acc += dl * load(k, krow + d);
      atomicAdd(dk + krow + d, dl * qd);
      if (drpb && d == 0) atomicAdd(drpb + it.h * bias_size(p) + bias, dl);
    }
    store(dq, qrow + d, scale * acc);
  });
}

// ---- fused: one warp per query ----

// The query of this thread's warp: its item, (b, h, n), window and q row; lanes split the dims.
struct WarpQuery {
  bool valid;
  int lane;
  int64_t item, n_tokens, qrow;
  Item it;
  Window w;
};

__device__ inline WarpQuery warp_query(const Problem& p) {
  WarpQuery wq;
  wq.n_tokens = tokens(p);
  wq.item = blockIdx.x * int64_t(kWarpsPerBlock) + threadIdx.x / kWarp;
  wq.lane = threadIdx.x % kWarp;
  wq.valid = wq.item < p.batch * p.heads * wq.n_tokens;
  if (!wq.valid) return wq;
  wq.it = item_of(p, wq.item, wq.n_tokens);
  wq.w = window_of(p, wq.it.n);
  wq.qrow = row_of(p, wq.it, wq.it.n, wq.n_tokens);
  return wq;
}

template <typename T>
__global__ void fused_forward_kernel(Problem p, const T* q, const T* k, const T* v, const T* rpb,
                                     T* out, float* lse, float scale) {
  const auto [valid, lane, item, n_tokens, qrow, it, w] = warp_query(p);
  if (!valid) return;
  float qs[kMaxPerLane], acc[kMaxPerLane];
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int64_t d = lane + i * kWarp;
    qs[i] = d < p.dim ? scale * load(q, qrow * p.dim + d) : 0.f;
    acc[i] = 0.f;
  }
  float m = -INFINITY, l = 0.f;
  for (int64_t j = 0; j < w.count; ++j) {
    int64_t key, bias;
    slot_at(p, w, j, key, bias);
    const int64_t krow = row_of(p, it, key, n_tokens);
    float x = 0.f;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int64_t d = lane + i * kWarp;
      if (d < p.dim) x += qs[i] * load(k, krow * p.dim + d);
    }
    x = warp_sum(x);
    if (rpb) x += load(rpb, it.h * bias_size(p) + bias);
    const float m_new = fmaxf(m, x), correction = __expf(m - m_new), prob = __expf(x - m_new);
    l = l * correction + prob;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int64_t d = lane + i * kWarp;
      if (d < p.dim_v) acc[i] = acc[i] * correction + prob * load(v, krow * p.dim_v + d);
    }
    m = m_new;
  }
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int64_t d = lane + i * kWarp;
    if (d < p.dim_v) store(out, qrow * p.dim_v + d, acc[i] / l);
  }
  if (lane == 0) lse[item] = m + logf(l);
}

// Recomputes each probability from the saved log-sum-exp: P = exp(x - lse), dS = P (dP - delta)
// with delta = dout . out; dq in registers, dk, dv and drpb added to float accumulators.
template <typename T>
__global__ void fused_backward_kernel(Problem p, const T* q, const T* k, const T* v, const T* rpb,
                                      const T* out, const float* lse, const T* dout, T* dq,
                                      float* dk, float* dv, float* drpb, float scale) {
  const auto [valid, lane, item, n_tokens, qrow, it, w] = warp_query(p);
  if (!valid) return;
  float qs[kMaxPerLane], dos[kMaxPerLane], dqs[kMaxPerLane];
  float delta = 0.f;
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int64_t d = lane + i * kWarp;
    qs[i] = d < p.dim ? load(q, qrow * p.dim + d) : 0.f;
    dos[i] = d < p.dim_v ? load(dout, qrow * p.dim_v + d) : 0.f;
    if (d < p.dim_v) delta += dos[i] * load(out, qrow * p.dim_v + d);
    dqs[i] = 0.f;
  }
  delta = warp_sum(delta);
  const float row_lse = lse[item];
  for (int64_t j = 0; j < w.count; ++j) {
    int64_t key, bias;
    slot_at(p, w, j, key, bias);
    const int64_t krow = row_of(p, it, key, n_tokens);
    float x = 0.f, dp = 0.f;
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int64_t d = lane + i * kWarp;
      if (d < p.dim) x += qs[i] * load(k, krow * p.dim + d);
      if (d < p.dim_v) dp += dos[i] * load(v, krow * p.dim_v + d);
    }
    x = scale * warp_sum(x);
    dp = warp_sum(dp);
    if (rpb) x += load(rpb, it.h * bias_size(p) + bias);
    const float prob = __expf(x - row_lse), ds = prob * (dp - delta);
#pragma unroll
    for (int i = 0; i < kMaxPerLane; ++i) {
      const int64_t d = lane + i * kWarp;
      if (d < p.dim) {
        dqs[i] += ds * load(k, krow * p.dim + d);
        atomicAdd(dk + krow * p.dim + d, scale * ds * qs[i]);
      }
      if (d < p.dim_v) atomicAdd(dv + krow * p.dim_v + d, prob * dos[i]);
    }
    if (drpb && lane == 0) atomicAdd(drpb + it.h * bias_size(p) + bias, ds);
  }
#pragma unroll
  for (int i = 0; i < kMaxPerLane; ++i) {
    const int64_t d = lane + i * kWarp;
    if (d < p.dim) store(dq, qrow * p.dim + d, scale * dqs[i]);
  }
}

// ---- launching ----

unsigned blocks_for(int64_t elements) {
  const int64_t blocks = (elements + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < (int64_t(1) << 30) ? (blocks > 0 ? blocks : 1) : (int64_t(1) << 30));
}

unsigned warp_blocks(const Problem& p) {
  const int64_t items = p.batch * p.heads * tokens(p);
  return static_cast<unsigned>((items + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

#define NB_DISPATCH(dtype, ...)                         \
  switch (dtype) {                                      \
    case DType::f32: {                                  \
      using T = float;                                  \
      __VA_ARGS__;                                      \
      break;                                            \
    }                                                   \
    case DType::f16: {                                  \
      using T = __half;                                 \
      __VA_ARGS__;                                      \
      break;                                            \
    }                                                   \
    case DType::bf16: {                                 \
      using T = __nv_bfloat16;                          \
      __VA_ARGS__;                                      \
      break;                                            \
    }                                                   \
  }

template <typename T>
const T* typed(const void* p) { return static_cast<const T*>(p); }
template <typename T>
T* typed(void* p) { return static_cast<T*>(p); }

// The host checks both limits first (na_cuda.cpp); the launchers refuse rather than launch past them.
cudaError_t fused_shape_error(const Problem& p) {
  if (p.dim > kFusedMaxDim || p.dim_v > kFusedMaxDim) return cudaErrorInvalidValue;
  return p.batch * p.heads * tokens(p) > kFusedMaxQueries ? cudaErrorInvalidConfiguration : cudaSuccess;
}

}  // namespace

cudaError_t fused_forward(const Problem& p, DType t, const void* q, const void* k, const void* v,
                          const void* rpb, void* out, float* lse, float scale, cudaStream_t s) {
  if (const cudaError_t e = fused_shape_error(p); e != cudaSuccess) return e;
  NB_DISPATCH(t, fused_forward_kernel<T><<<warp_blocks(p), kWarp * kWarpsPerBlock, 0, s>>>(
                     p, typed<T>(q), typed<T>(k), typed<T>(v), typed<T>(rpb), typed<T>(out), lse, scale));
  return cudaGetLastError();
}

cudaError_t fused_backward(const Problem& p, DType t, const void* q, const void* k, const void* v,
                           const void* rpb, const void* out, const float* lse, const void* dout,
                           void* dq, float* dk, float* dv, float* drpb, float scale,
                           cudaStream_t s) {
  if (const cudaError_t e = fused_shape_error(p); e != cudaSuccess) return e;
  NB_DISPATCH(t, fused_backward_kernel<T><<<warp_blocks(p), kWarp * kWarpsPerBlock, 0, s>>>(
                     p, typed<T>(q), typed<T>(k), typed<T>(v), typed<T>(rpb), typed<T>(out), lse,
                     typed<T>(dout), typed<T>(dq), dk, dv, drpb, scale));
  return cudaGetLastError();
}

cudaError_t qk_rpb(const Problem& p, DType t, const void* q, const void* k, const void* rpb,
                   void* logits, float scale, cudaStream_t s) {
  const int64_t total = p.batch * p.heads * tokens(p) * window_keys(p);
  NB_DISPATCH(t, qk_rpb_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(
                     p, typed<T>(q), typed<T>(k), typed<T>(rpb), typed<T>(logits), scale));
  return cudaGetLastError();
}

cudaError_t qk_rpb_backward(const Problem& p, DType t, const void* q, const void* k,
                            const void* d_logits, void* dq, float* dk, float* drpb, float scale,
                            cudaStream_t s) {
  const int64_t total = p.batch * p.heads * tokens(p) * p.dim;
  NB_DISPATCH(t, qk_rpb_backward_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(
                     p, typed<T>(q), typed<T>(k), typed<T>(d_logits), typed<T>(dq), dk, drpb, scale));
  return cudaGetLastError();
}

cudaError_t av(const Problem& p, DType t, const void* attn, const void* v, void* out, cudaStream_t s) {
  const int64_t total = p.batch * p.heads * tokens(p) * p.dim_v;
  NB_DISPATCH(t, av_kernel<T><<<blocks_for(total), kThreads, 0, s>>>(p, typed<T>(attn), typed<T>(v),
                                                                        typed<T>(out)));
  return cudaGetLastError();
}

cudaError_t av_backward(const Problem& p, DType t, const void* attn, const void* v,
                        const void* dout, void* d_attn, float* dv, cudaStream_t s) {
  const int64_t slots = p.batch * p.heads * tokens(p) * window_keys(p);
  const int64_t elements = p.batch * p.heads * tokens(p) * p.dim_v;
  NB_DISPATCH(t, {
    av_backward_attn_kernel<T><<<blocks_for(slots), kThreads, 0, s>>>(p, typed<T>(v), typed<T>(dout),
                                                                      typed<T>(d_attn));
    av_backward_v_kernel<T><<<blocks_for(elements), kThreads, 0, s>>>(p, typed<T>(attn), typed<T>(dout), dv);
  });
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace natbench
