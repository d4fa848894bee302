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

// Queries are taken in segments of up to kSegment consecutive queries of one dilation group
// along the last axis. They share their windows on every other axis, so their keys form one
// region: the per-axis windows times the union of their last-axis windows.
constexpr int64_t kSegment = 8;

struct Segment {
  int64_t first_query, count, step;  // queries first_query + i * step, i < count
};

template <int R>
std::vector<Segment> segments(const Geometry<R>& g) {
  const Axis& last = g.axes[R - 1];
  std::vector<Segment> out;
  for (int64_t row = 0; row < g.tokens / last.length; ++row) {
    for (int64_t group = 0; group < last.dilation && group < last.length; ++group) {
      const int64_t members = (last.length - group + last.dilation - 1) / last.dilation;
      for (int64_t start = 0; start < members; start += kSegment)
        out.push_back({row * last.length + group + start * last.dilation,
                       std::min(kSegment, members - start), last.dilation});
    }
  }
  return out;
}

// Fused forward. `kt` is k transposed to [B, H, D, N] (one copy per call). Per segment: every
// query's scores against the whole region, as vectorized axpys over contiguous runs of kt; then
// per query a softmax over its own window; then the weighted values, each value row read once
// for the whole segment. Nothing of size [N, Kn] is kept; the log-sum-exp is saved for backward.
template <int R, typename T, typename A>
void fused_forward(const Geometry<R>& g, const Shape& s, const T* q, const A* kt, const T* v,
                   const T* rpb, T* out, A* lse, A scale) {
  const int64_t n_tokens = g.tokens, H = s.heads, D = s.dim, Dv = s.dim_v;
  const Axis& last = g.axes[R - 1];
  const auto parts = segments(g);
  const int64_t n_parts = static_cast<int64_t>(parts.size());
#pragma omp parallel
  {
    std::vector<int64_t> keys(g.window_keys), bias(g.window_keys), region;
    std::vector<A> kloc, scores, probs, p(g.window_keys), acc;
    std::array<AxisWindow, kSegment> lasts;
    std::array<A, kSegment> totals, qd;
#pragma omp for schedule(static)
    for (int64_t work = 0; work < s.batch * H * n_parts; ++work) {
      const int64_t b = work / (H * n_parts), h = (work / n_parts) % H;
      const Segment& seg = parts[work % n_parts];
      // The region: the first query's keys with its last-axis window widened to the union.
      const int64_t coordinate = seg.first_query % last.length;
      int64_t low = 0, high = 0;
      for (int64_t i = 0; i < seg.count; ++i) {
        lasts[i] = axis_window(last, coordinate + i * seg.step);
        const int64_t end = lasts[i].first + (lasts[i].count - 1) * last.dilation;
        low = i == 0 ? lasts[i].first : std::min(low, lasts[i].first);
        high = i == 0 ? end : std::max(high, end);
      }
      const int64_t width = (high - low) / last.dilation + 1;
      const int64_t count = g.neighbors(seg.first_query, keys.data(), bias.data());
      const int64_t rows = count / lasts[0].count;  // key rows of the other axes
      region.resize(rows * width);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row_start = keys[r * lasts[0].count] - lasts[0].first;
        for (int64_t c = 0; c < width; ++c) region[r * width + c] = row_start + low + c * last.dilation;
      }
      const int64_t rk = rows * width, step = last.dilation;
      // The region's keys as a local [D, region] block, copied in runs from kt.
      kloc.resize(D * rk);
      for (int64_t d = 0; d < D; ++d) {
        const A* kd = kt + ((b * H + h) * D + d) * n_tokens;
        for (int64_t r = 0; r < rows; ++r) {
          const A* run = kd + region[r * width];
          A* dst = kloc.data() + d * rk + r * width;
          if (step == 1) {
            std::copy(run, run + width, dst);
          } else {
            for (int64_t c = 0; c < width; ++c) dst[c] = run[c * step];
          }
        }
      }
      // Scores of every query against the whole region. d is the outer loop so that the
      // accumulations of all queries interleave instead of waiting on one another.
      scores.assign(seg.count * rk, A(0));
      for (int64_t d = 0; d < D; ++d) {
        const A* row = kloc.data() + d * rk;
        for (int64_t i = 0; i < seg.count; ++i)
          qd[i] = scale * static_cast<A>(q[((b * n_tokens + seg.first_query + i * seg.step) * H + h) * D + d]);
        for (int64_t i = 0; i < seg.count; ++i) {
          A* si = scores.data() + i * rk;
          const A qi = qd[i];
#pragma omp simd
          for (int64_t j = 0; j < rk; ++j) si[j] += qi * row[j];
        }
      }
      probs.assign(seg.count * rk, A(0));
      for (int64_t i = 0; i < seg.count; ++i) {
        const int64_t n = seg.first_query + i * seg.step;
        const int64_t offset = (lasts[i].first - low) / last.dilation, cols = lasts[i].count;
        const A* si = scores.data() + i * rk;
        int64_t m = 0;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c) p[m++] = si[r * width + offset + c];
        if (rpb) {
          // Bias indices: the first query's, shifted by this query's last-axis window.
          const int64_t shift = lasts[i].bias0 - lasts[0].bias0;
          m = 0;
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c, ++m)
              p[m] += static_cast<A>(rpb[h * g.bias_size + bias[r * lasts[0].count] + shift + c]);
        }
        A top = -std::numeric_limits<A>::infinity();
        for (int64_t j = 0; j < m; ++j) top = std::max(top, p[j]);
        A total = 0;
#pragma omp simd reduction(+ : total)
        for (int64_t j = 0; j < m; ++j) {
          p[j] = std::exp(p[j] - top);
          total += p[j];
        }
        // Probabilities back into the region's layout (zeros outside the window).
        A* pi = probs.data() + i * rk;
        m = 0;
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = 0; c < cols; ++c) pi[r * width + offset + c] = p[m++];
        totals[i] = total;
        lse[(b * H + h) * n_tokens + n] = top + std::log(total);
      }
      // Weighted values: each region value row is read once for all queries of the segment.
      acc.assign(seg.count * Dv, A(0));
      for (int64_t j = 0; j < rk; ++j) {
        const T* vj = v + ((b * n_tokens + region[j]) * H + h) * Dv;
        for (int64_t i = 0; i < seg.count; ++i) axpy(acc.data() + i * Dv, probs[i * rk + j], vj, Dv);
      }
      for (int64_t i = 0; i < seg.count; ++i) {
        T* o = out + ((b * n_tokens + seg.first_query + i * seg.step) * H + h) * Dv;
        const A inverse = A(1) / totals[i];
        for (int64_t d = 0; d < Dv; ++d) o[d] = static_cast<T>(acc[i * Dv + d] * inverse);
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
