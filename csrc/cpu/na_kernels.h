// CPU neighborhood-attention kernels on raw pointers, templated over rank and element type.
//
// Layout: q, k, v, out, dq, dk, dv are the public heads-last [B, N, H, D] (N = flattened map);
// lse is [B, H, N]; the unfused attention matrix is [B, H, N, Kn]; bias tables are
// [H, prod(2K-1)]. T is the element type, A the accumulation type (float, or double for double).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../include/na_geometry.h"

namespace natbench {

struct Shape {
  int64_t batch, heads, dim, dim_v;
};

template <typename A, typename T>
inline A dot(const A* a, const T* b, int64_t n) {
  A s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t d = 0; d < n; ++d) s += a[d] * static_cast<A>(b[d]);
  return s;
}

template <typename A, typename T>
inline void axpy(A* y, A alpha, const T* x, int64_t n) {
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) y[d] += alpha * static_cast<A>(x[d]);
}

// Queries are walked in row-major blocks so that neighbouring queries reuse keys from cache.
constexpr int64_t kQueryBlock = 64;

// Fused forward: per query, scores over its window in a small scratch buffer, softmax, and the
// weighted sum of values; nothing of size [N, Kn] is kept. Saves the log-sum-exp for backward.
template <int R, typename T, typename A>
void fused_forward(const Geometry<R>& g, const Shape& s, const T* q, const T* k, const T* v,
                   const T* rpb, T* out, A* lse, A scale) {
  const int64_t n_tokens = g.tokens, blocks = (n_tokens + kQueryBlock - 1) / kQueryBlock;
  const int64_t H = s.heads, D = s.dim, Dv = s.dim_v;
#pragma omp parallel
  {
    std::vector<int64_t> keys(g.window_keys), bias(g.window_keys);
    std::vector<A> score(g.window_keys), qs(D), acc(Dv);
#pragma omp for schedule(static)
    for (int64_t work = 0; work < s.batch * H * blocks; ++work) {
      const int64_t b = work / (H * blocks), h = (work / blocks) % H, block = work % blocks;
      const int64_t stop = std::min(n_tokens, (block + 1) * kQueryBlock);
      for (int64_t n = block * kQueryBlock; n < stop; ++n) {
        const T* qi = q + ((b * n_tokens + n) * H + h) * D;
        for (int64_t d = 0; d < D; ++d) qs[d] = scale * static_cast<A>(qi[d]);
        const int64_t count = g.neighbors(n, keys.data(), bias.data());
        A top = -std::numeric_limits<A>::infinity();
        for (int64_t j = 0; j < count; ++j) {
          A x = dot(qs.data(), k + ((b * n_tokens + keys[j]) * H + h) * D, D);
          if (rpb) x += static_cast<A>(rpb[h * g.bias_size + bias[j]]);
          score[j] = x;
          top = std::max(top, x);
        }
        A total = 0;
        std::fill(acc.begin(), acc.end(), A(0));
        for (int64_t j = 0; j < count; ++j) {
          const A p = std::exp(score[j] - top);
          total += p;
          axpy(acc.data(), p, v + ((b * n_tokens + keys[j]) * H + h) * Dv, Dv);
        }
        T* o = out + ((b * n_tokens + n) * H + h) * Dv;
        for (int64_t d = 0; d < Dv; ++d) o[d] = static_cast<T>(acc[d] / total);
        lse[(b * H + h) * n_tokens + n] = top + std::log(total);
      }
    }
  }
}

// Fused backward: recomputes each query's probabilities from the saved log-sum-exp. Work is
// split by (batch, head): dk, dv and the bias gradient of one (b, h) are written by one thread.
// dk, dv are accumulation buffers of type A ([B, N, H, D]); drpb is [B, H, prod(2K-1)].
template <int R, typename T, typename A>
void fused_backward(const Geometry<R>& g, const Shape& s, const T* q, const T* k, const T* v,
                    const T* rpb, const T* out, const T* dout, const A* lse, T* dq, A* dk, A* dv,
                    A* drpb, A scale) {
  const int64_t n_tokens = g.tokens, H = s.heads, D = s.dim, Dv = s.dim_v;
#pragma omp parallel
  {
    std::vector<int64_t> keys(g.window_keys), bias(g.window_keys);
    std::vector<A> qs(D), dqs(D), dos(Dv);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < s.batch * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      for (int64_t n = 0; n < n_tokens; ++n) {
        const int64_t row = (b * n_tokens + n) * H + h;
        for (int64_t d = 0; d < D; ++d) qs[d] = scale * static_cast<A>(q[row * D + d]);
        for (int64_t d = 0; d < Dv; ++d) dos[d] = static_cast<A>(dout[row * Dv + d]);
        const A delta = dot(dos.data(), out + row * Dv, Dv);
        const A m = lse[bh * n_tokens + n];
        std::fill(dqs.begin(), dqs.end(), A(0));
        const int64_t count = g.neighbors(n, keys.data(), bias.data());
        for (int64_t j = 0; j < count; ++j) {
          const int64_t key = (b * n_tokens + keys[j]) * H + h;
          A x = dot(qs.data(), k + key * D, D);
          if (rpb) x += static_cast<A>(rpb[h * g.bias_size + bias[j]]);
          const A p = std::exp(x - m);
          axpy(dv + key * Dv, p, dos.data(), Dv);
          const A ds = p * (dot(dos.data(), v + key * Dv, Dv) - delta);
          axpy(dqs.data(), ds, k + key * D, D);
          axpy(dk + key * D, ds, qs.data(), D);  // qs carries the scale already
          if (drpb) drpb[bh * g.bias_size + bias[j]] += ds;
        }
        for (int64_t d = 0; d < D; ++d) dq[row * D + d] = static_cast<T>(scale * dqs[d]);
      }
    }
  }
}

// ---- The unfused design of the NAT v0.11 extension: QK+RPB -> softmax (torch) -> AV. ----

// logits[b, h, n, slot] = scale * q_n . k_key + bias; slots past a causal window are -inf.
template <int R, typename T, typename A>
void qk_rpb(const Geometry<R>& g, const Shape& s, const T* q, const T* k, const T* rpb,
            T* logits, A scale) {
  const int64_t n_tokens = g.tokens, H = s.heads, D = s.dim, kn = g.window_keys;
#pragma omp parallel
  {
    std::vector<int64_t> keys(kn), bias(kn);
    std::vector<A> qs(D);
#pragma omp for schedule(static)
    for (int64_t item = 0; item < s.batch * H * n_tokens; ++item) {
      const int64_t b = item / (H * n_tokens), h = (item / n_tokens) % H, n = item % n_tokens;
      const T* qi = q + ((b * n_tokens + n) * H + h) * D;
      for (int64_t d = 0; d < D; ++d) qs[d] = scale * static_cast<A>(qi[d]);
      const int64_t count = g.neighbors(n, keys.data(), bias.data());
      T* row = logits + item * kn;
      for (int64_t j = 0; j < count; ++j) {
        A x = dot(qs.data(), k + ((b * n_tokens + keys[j]) * H + h) * D, D);
        if (rpb) x += static_cast<A>(rpb[h * g.bias_size + bias[j]]);
        row[j] = static_cast<T>(x);
      }
      for (int64_t j = count; j < kn; ++j) row[j] = static_cast<T>(-std::numeric_limits<A>::infinity());
    }
  }
}

// out_n = sum over slots of attn[b, h, n, slot] * v_key.
template <int R, typename T, typename A>
void av(const Geometry<R>& g, const Shape& s, const T* attn, const T* v, T* out) {
  const int64_t n_tokens = g.tokens, H = s.heads, Dv = s.dim_v, kn = g.window_keys;
#pragma omp parallel
  {
    std::vector<int64_t> keys(kn), bias(kn);
    std::vector<A> acc(Dv);
#pragma omp for schedule(static)
    for (int64_t item = 0; item < s.batch * H * n_tokens; ++item) {
      const int64_t b = item / (H * n_tokens), h = (item / n_tokens) % H, n = item % n_tokens;
      const int64_t count = g.neighbors(n, keys.data(), bias.data());
      std::fill(acc.begin(), acc.end(), A(0));
      for (int64_t j = 0; j < count; ++j)
        axpy(acc.data(), static_cast<A>(attn[item * kn + j]),
             v + ((b * n_tokens + keys[j]) * H + h) * Dv, Dv);
      T* o = out + ((b * n_tokens + n) * H + h) * Dv;
      for (int64_t d = 0; d < Dv; ++d) o[d] = static_cast<T>(acc[d]);
    }
  }
}

// Backward of av: d_attn[b, h, n, slot] = dout_n . v_key; dv_key += attn * dout_n.
template <int R, typename T, typename A>
void av_backward(const Geometry<R>& g, const Shape& s, const T* attn, const T* v, const T* dout,
                 T* d_attn, A* dv) {
  const int64_t n_tokens = g.tokens, H = s.heads, Dv = s.dim_v, kn = g.window_keys;
#pragma omp parallel
  {
    std::vector<int64_t> keys(kn), bias(kn);
    std::vector<A> dos(Dv);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < s.batch * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      for (int64_t n = 0; n < n_tokens; ++n) {
        const int64_t item = bh * n_tokens + n, row = (b * n_tokens + n) * H + h;
        for (int64_t d = 0; d < Dv; ++d) dos[d] = static_cast<A>(dout[row * Dv + d]);
        const int64_t count = g.neighbors(n, keys.data(), bias.data());
        for (int64_t j = 0; j < kn; ++j) {
          if (j >= count) {
            d_attn[item * kn + j] = static_cast<T>(0);
            continue;
          }
          const int64_t key = (b * n_tokens + keys[j]) * H + h;
          d_attn[item * kn + j] = static_cast<T>(dot(dos.data(), v + key * Dv, Dv));
          axpy(dv + key * Dv, static_cast<A>(attn[item * kn + j]), dos.data(), Dv);
        }
      }
    }
  }
}

// Backward of qk_rpb given d_logits: dq, dk (accumulated, type A) and the bias gradient.
template <int R, typename T, typename A>
void qk_rpb_backward(const Geometry<R>& g, const Shape& s, const T* q, const T* k,
                     const T* d_logits, T* dq, A* dk, A* drpb, A scale) {
  const int64_t n_tokens = g.tokens, H = s.heads, D = s.dim, kn = g.window_keys;
#pragma omp parallel
  {
    std::vector<int64_t> keys(kn), bias(kn);
    std::vector<A> qs(D), dqs(D);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < s.batch * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      for (int64_t n = 0; n < n_tokens; ++n) {
        const int64_t item = bh * n_tokens + n, row = (b * n_tokens + n) * H + h;
        for (int64_t d = 0; d < D; ++d) qs[d] = scale * static_cast<A>(q[row * D + d]);
        std::fill(dqs.begin(), dqs.end(), A(0));
        const int64_t count = g.neighbors(n, keys.data(), bias.data());
        for (int64_t j = 0; j < count; ++j) {
          const int64_t key = (b * n_tokens + keys[j]) * H + h;
          const A dl = static_cast<A>(d_logits[item * kn + j]);
          axpy(dqs.data(), dl, k + key * D, D);
          axpy(dk + key * D, dl, qs.data(), D);
          if (drpb) drpb[bh * g.bias_size + bias[j]] += dl;
        }
        for (int64_t d = 0; d < D; ++d) dq[row * D + d] = static_cast<T>(scale * dqs[d]);
      }
    }
  }
}

}  // namespace natbench
