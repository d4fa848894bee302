// CPU neighborhood-attention kernels on raw pointers, templated over rank and element type.
//
// Layout: q, k, v, out, dq, dk, dv are the public heads-last [B, N, H, D] (N = flattened map);
// lse is [B, H, N]; the unfused attention matrix is [B, H, N, Kn]; bias tables are
// [H, prod(2K-1)]. T is the element type, A the accumulation type (float, or double for double).
#pragma once

#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "../include/na_geometry.h"
#include "na_simd.h"

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

// ---- The fused design (the default `natten` backend). ----
//
// One query at a time, no [N, Kn] matrix: the window is read as rows (one per combination of the
// other axes' window positions) of up to K keys that are consecutive along the last axis. Keys
// (and, for backward, values) are packed once per call as [B, H, D, P]: each line of the last
// axis has its tokens ordered by dilation group, so a window row is a run of consecutive
// positions and its scores for one query are sum_d q[d] * packed[d, run]: vector FMAs with q[d]
// broadcast, W keys per vector. Vectors are taken kBlock at a time (their accumulators stay in
// registers across d); the softmax is online across blocks, and the weighted values of a block
// are summed into an output kept in registers.

constexpr int kBlock = 8;             // score vectors per step
constexpr int64_t kLineChunk = 64;    // queries of one line per parallel work item
constexpr int64_t kBiasPad = 8;       // zero tail of each head's bias table row (>= any W)

// Position of each last-axis coordinate in its packed line: dilation groups one after another.
inline std::vector<int64_t> line_positions(const Axis& last) {
  std::vector<int64_t> position(last.length);
  int64_t next = 0;
  for (int64_t group = 0; group < last.dilation && group < last.length; ++group)
    for (int64_t x = group; x < last.length; x += last.dilation) position[x] = next++;
  return position;
}

// x: heads-last [B, N, H, dim] -> [B, H, dim, P], P = N + W (a zero tail for full-width loads).
template <int R, typename A>
std::vector<A> pack(const Geometry<R>& g, const Shape& s, const A* x, int64_t dim,
                    const std::vector<int64_t>& position) {
  const int64_t n_tokens = g.tokens, length = g.axes[R - 1].length, H = s.heads;
  const int64_t padded = n_tokens + simd::kWidth<A>, lines = n_tokens / length;
  std::vector<A> out(s.batch * H * dim * padded, A(0));
#pragma omp parallel for schedule(static)
  for (int64_t item = 0; item < s.batch * H * lines; ++item) {
    const int64_t b = item / (H * lines), h = (item / lines) % H, line = item % lines;
    A* dst = out.data() + (b * H + h) * dim * padded + line * length;
    for (int64_t c = 0; c < length; ++c) {
      const A* src = x + ((b * n_tokens + line * length + c) * H + h) * dim;
      for (int64_t d = 0; d < dim; ++d) dst[d * padded + position[c]] = src[d];
    }
  }
  return out;
}

// The window rows shared by every query of one line: the token where each key line starts and
// the bias index of each row's first last-axis offset.
template <int R>
struct LineRows {
  std::vector<int64_t> token, bias;

  void build(const Geometry<R>& g, int64_t line) {
    const int64_t start = line * g.axes[R - 1].length;
    std::array<AxisWindow, R> w;
    int64_t count = 1;
    for (int d = 0; d < R - 1; ++d) {
      w[d] = axis_window(g.axes[d], (start / g.token_stride[d]) % g.axes[d].length);
      count *= w[d].count;
    }
    token.resize(count);
    bias.resize(count);
    std::array<int64_t, R> t{};
    for (int64_t r = 0; r < count; ++r) {
      token[r] = bias[r] = 0;
      for (int d = 0; d < R - 1; ++d) {
        token[r] += (w[d].first + t[d] * g.axes[d].dilation) * g.token_stride[d];
        bias[r] += (w[d].bias0 + t[d]) * g.bias_stride[d];
      }
      for (int d = R - 2; d >= 0; --d) {  // odometer over the other axes' windows
        if (++t[d] < w[d].count) break;
        t[d] = 0;
      }
    }
  }
};

// One query's window as score vectors: vector j covers row j / chunks, last-axis keys
// [(j % chunks) * W, +W) of the row's `cols`.
struct QueryWindow {
  AxisWindow last;
  int64_t packed_first, chunks, vectors;
};

template <typename A>
QueryWindow query_window(const Axis& last, const std::vector<int64_t>& position, int64_t x,
                         int64_t rows) {
  QueryWindow q;
  q.last = axis_window(last, x);
  q.packed_first = position[q.last.first];
  q.chunks = (q.last.count + simd::kWidth<A> - 1) / simd::kWidth<A>;
  q.vectors = rows * q.chunks;
  return q;
}

// Vectors [first, first + count) of a query window, walked once with the row carried (no division
// per vector, and scalar stores only: a vectorized read of scalar stores would stall on
// store-to-load forwarding): for each vector, where its keys start in the packed keys (and in
// the packed values, for backward), the token of its first key, its bias index and how many of
// its lanes are keys.
template <typename A, int R>
struct Block {
  int count;
  std::array<const A*, kBlock> keys, values;
  std::array<int64_t, kBlock> token, bias, valid;

  Block(const QueryWindow& qw, int64_t first, const LineRows<R>& rows, int64_t dilation,
        const A* packed_keys, const A* packed_values)
      : count(static_cast<int>(std::min<int64_t>(kBlock, qw.vectors - first))) {
    constexpr int W = simd::kWidth<A>;
    int64_t r = first / qw.chunks, c = first % qw.chunks * W;
    for (int j = 0; j < count; ++j) {
      const int64_t at = rows.token[r] + qw.packed_first + c;
      keys[j] = packed_keys + at;
      values[j] = packed_values ? packed_values + at : nullptr;
      token[j] = rows.token[r] + qw.last.first + c * dilation;
      bias[j] = rows.bias[r] + qw.last.bias0 + c;
      valid[j] = std::min<int64_t>(W, qw.last.count - c);
      c += W;
      if (c >= qw.chunks * W) c = 0, ++r;
    }
  }
};

// acc[j] = sum_d x[d] * at[j][d * stride : +W] for j < G: G accumulators in registers.
template <int G, typename A>
inline void dots(const A* x, int64_t dim, const A* const* at, int64_t stride, simd::Vec<A>* acc) {
  simd::Vec<A> sum[G];
  for (int j = 0; j < G; ++j) sum[j] = simd::Vec<A>{};
  for (int64_t d = 0; d < dim; ++d) {
    const simd::Vec<A> xd = simd::splat(x[d]);
    for (int j = 0; j < G; ++j) sum[j] += xd * simd::load(at[j] + d * stride);
  }
  for (int j = 0; j < G; ++j) acc[j] = sum[j];
}

template <typename A>
inline void dots(int count, const A* x, int64_t dim, const A* const* at, int64_t stride,
                 simd::Vec<A>* acc) {
  switch (count) {
    case 1: return dots<1>(x, dim, at, stride, acc);
    case 2: return dots<2>(x, dim, at, stride, acc);
    case 3: return dots<3>(x, dim, at, stride, acc);
    case 4: return dots<4>(x, dim, at, stride, acc);
    case 5: return dots<5>(x, dim, at, stride, acc);
    case 6: return dots<6>(x, dim, at, stride, acc);
    case 7: return dots<7>(x, dim, at, stride, acc);
    default: return dots<kBlock>(x, dim, at, stride, acc);
  }
}

// Calls fn(offset, std::integral_constant<int, V>) over [0, dim) in pieces of V <= 8 vectors,
// then fn(offset, 0) for a scalar tail: kernels over a row keep V vectors in registers.
template <typename A, typename Fn>
inline void vector_pieces(int64_t dim, Fn&& fn) {
  constexpr int W = simd::kWidth<A>;
  int64_t d = 0;
  for (; d + 8 * W <= dim; d += 8 * W) fn(d, std::integral_constant<int, 8>{});
  switch ((dim - d) / W) {
    case 7: fn(d, std::integral_constant<int, 7>{}); break;
    case 6: fn(d, std::integral_constant<int, 6>{}); break;
    case 5: fn(d, std::integral_constant<int, 5>{}); break;
    case 4: fn(d, std::integral_constant<int, 4>{}); break;
    case 3: fn(d, std::integral_constant<int, 3>{}); break;
    case 2: fn(d, std::integral_constant<int, 2>{}); break;
    case 1: fn(d, std::integral_constant<int, 1>{}); break;
    default: break;
  }
  if (dim % W) fn(dim - dim % W, std::integral_constant<int, 0>{});
}

// y[0:dim] += sum_e w[e] * rows[e][0:dim].
template <typename A>
inline void gather_axpy(A* y, int64_t dim, const A* w, const A* const* rows, int64_t n) {
  constexpr int W = simd::kWidth<A>;
  vector_pieces<A>(dim, [&](int64_t d0, auto pieces) {
    constexpr int V = decltype(pieces)::value;
    if constexpr (V == 0) {
      for (int64_t d = d0; d < dim; ++d)
        for (int64_t e = 0; e < n; ++e) y[d] += w[e] * rows[e][d];
    } else {
      // Even and odd entries sum apart: 2V independent FMA chains hide the FMA latency.
      simd::Vec<A> even[V], odd[V];
      for (int j = 0; j < V; ++j) even[j] = simd::load(y + d0 + j * W), odd[j] = simd::Vec<A>{};
      int64_t e = 0;
      for (; e + 1 < n; e += 2) {
        const simd::Vec<A> we = simd::splat(w[e]), wo = simd::splat(w[e + 1]);
        for (int j = 0; j < V; ++j) {
          even[j] += we * simd::load(rows[e] + d0 + j * W);
          odd[j] += wo * simd::load(rows[e + 1] + d0 + j * W);
        }
      }
      if (e < n) {
        const simd::Vec<A> we = simd::splat(w[e]);
        for (int j = 0; j < V; ++j) even[j] += we * simd::load(rows[e] + d0 + j * W);
      }
      for (int j = 0; j < V; ++j) simd::store(y + d0 + j * W, even[j] + odd[j]);
    }
  });
}

// rows[e][0:dim] += w[e] * x[0:dim] for every e.
template <typename A>
inline void scatter_axpy(A* const* rows, const A* w, int64_t n, const A* x, int64_t dim) {
  constexpr int W = simd::kWidth<A>;
  vector_pieces<A>(dim, [&](int64_t d0, auto pieces) {
    constexpr int V = decltype(pieces)::value;
    if constexpr (V == 0) {
      for (int64_t e = 0; e < n; ++e)
        for (int64_t d = d0; d < dim; ++d) rows[e][d] += w[e] * x[d];
    } else {
      simd::Vec<A> xs[V];
      for (int j = 0; j < V; ++j) xs[j] = simd::load(x + d0 + j * W);
      for (int64_t e = 0; e < n; ++e) {
        const simd::Vec<A> we = simd::splat(w[e]);
        for (int j = 0; j < V; ++j) simd::store(rows[e] + d0 + j * W, simd::load(rows[e] + d0 + j * W) + we * xs[j]);
      }
    }
  });
}

// Per-thread scratch of the fused kernels, sized once.
template <typename A>
struct Scratch {
  static constexpr int64_t kKeys = kBlock * simd::kWidth<A>;
  std::vector<A> x, y, acc;
  std::array<A, kKeys + simd::kWidth<A>> w, w2;
  std::array<const A*, kKeys> rows;
  std::array<A*, kKeys> rows2, rows3;
  std::array<int64_t, kKeys> bias;
  Scratch(int64_t dim, int64_t dim_v) : x(dim), y(dim_v), acc(std::max(dim, dim_v)) {}
};

// Fused forward. q, k, v are heads-last in the accumulation type A; rpb is the bias table
// [H, bias_size + kBiasPad] in A (zero tail); out is written in T; lse [B, H, N] is kept for backward.
template <int R, typename T, typename A>
void fused_forward(const Geometry<R>& g, const Shape& s, const A* q, const A* k, const A* v,
                   const A* rpb, T* out, A* lse, A scale) {
  constexpr int W = simd::kWidth<A>;
  using Vec = simd::Vec<A>;
  const int64_t n_tokens = g.tokens, H = s.heads, D = s.dim, Dv = s.dim_v;
  const Axis& last = g.axes[R - 1];
  const int64_t length = last.length, lines = n_tokens / length;
  const int64_t chunks = (length + kLineChunk - 1) / kLineChunk, padded = n_tokens + W;
  const int64_t rpb_row = g.bias_size + kBiasPad, key_step = last.dilation * H * Dv;
  static_assert(kBiasPad >= W, "bias rows need a full vector of tail");
  const auto position = line_positions(last);
  const std::vector<A> kp = pack(g, s, k, D, position);
#pragma omp parallel
  {
    Scratch<A> sc(D, Dv);
    LineRows<R> rows;
    int64_t built = -1;
    // Heads innermost: they share the line's window rows and read neighbouring memory.
#pragma omp for schedule(static)
    for (int64_t work = 0; work < s.batch * lines * chunks * H; ++work) {
      const int64_t b = work / (lines * chunks * H), line = (work / (chunks * H)) % lines;
      const int64_t x0 = (work / H) % chunks * kLineChunk, h = work % H;
      if (line != built) rows.build(g, line), built = line;
      const int64_t n_rows = static_cast<int64_t>(rows.token.size());
      const A* keys = kp.data() + (b * H + h) * D * padded;
      const A* values = v + (b * n_tokens * H + h) * Dv;
      const A* bias = rpb ? rpb + h * rpb_row : nullptr;
      for (int64_t x = x0; x < std::min(length, x0 + kLineChunk); ++x) {
        const int64_t n = line * length + x, row = (b * n_tokens + n) * H + h;
        const QueryWindow qw = query_window<A>(last, position, x, n_rows);
        for (int64_t d = 0; d < D; ++d) sc.x[d] = scale * q[row * D + d];
        std::fill(sc.y.begin(), sc.y.end(), A(0));
        A top = -std::numeric_limits<A>::infinity();
        Vec sums{};
        for (int64_t j0 = 0; j0 < qw.vectors; j0 += kBlock) {
          const Block<A, R> blk(qw, j0, rows, last.dilation, keys, nullptr);
          Vec score[kBlock];
          dots(blk.count, sc.x.data(), D, blk.keys.data(), padded, score);
          const Vec none = simd::splat(-std::numeric_limits<A>::infinity());
          Vec tops = none;
          for (int j = 0; j < blk.count; ++j) {
            if (bias) score[j] += simd::load(bias + blk.bias[j]);
            score[j] = simd::first_lanes<A>(blk.valid[j]) ? score[j] : none;
            tops = score[j] > tops ? score[j] : tops;
          }
          const A block_top = simd::max_lane(tops);
          if (block_top > top) {  // online softmax: rescale what the earlier blocks summed
            const A factor = j0 > 0 ? std::exp(top - block_top) : A(0);
            for (int64_t d = 0; d < Dv; ++d) sc.y[d] *= factor;
            sums *= factor;
            top = block_top;
          }
          int64_t m = 0;
          for (int j = 0; j < blk.count; ++j) {
            const Vec p = simd::exp(score[j] - top);
            sums += p;
            simd::store(sc.w.data() + m, p);
            const A* first = values + blk.token[j] * H * Dv;
            for (int64_t t = 0; t < blk.valid[j]; ++t) sc.rows[m + t] = first + t * key_step;
            m += blk.valid[j];
          }
          gather_axpy(sc.y.data(), Dv, sc.w.data(), sc.rows.data(), m);
        }
        const A total = simd::sum_lanes(sums);
        T* o = out + row * Dv;
        for (int64_t d = 0; d < Dv; ++d) o[d] = static_cast<T>(sc.y[d] / total);
        lse[(b * H + h) * n_tokens + n] = top + std::log(total);
      }
    }
  }
}

// Fused backward from the saved log-sum-exp: per query, P and dP = dO . V over its window by
// the forward's vector blocks, dS = P (dP - delta), then dQ gathered from the keys and dK, dV
// scattered to them. Work is split by (batch, head), so a thread owns the dk, dv and bias
// gradient it writes. All inputs heads-last in A; dk, dv accumulate in A; drpb is [B, H, bias_size].
template <int R, typename T, typename A>
void fused_backward(const Geometry<R>& g, const Shape& s, const A* q, const A* k, const A* v,
                    const A* rpb, const A* out, const A* dout, const A* lse, T* dq, A* dk, A* dv,
                    A* drpb, A scale) {
  constexpr int W = simd::kWidth<A>;
  using Vec = simd::Vec<A>;
  const int64_t n_tokens = g.tokens, H = s.heads, D = s.dim, Dv = s.dim_v;
  const Axis& last = g.axes[R - 1];
  const int64_t length = last.length, lines = n_tokens / length, padded = n_tokens + W;
  const int64_t rpb_row = g.bias_size + kBiasPad;
  static_assert(kBiasPad >= W, "bias rows need a full vector of tail");
  const auto position = line_positions(last);
  const std::vector<A> kp = pack(g, s, k, D, position), vp = pack(g, s, v, Dv, position);
#pragma omp parallel
  {
    Scratch<A> sc(D, Dv);
    LineRows<R> rows;
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < s.batch * H; ++bh) {
      const int64_t b = bh / H, h = bh % H, head = b * n_tokens * H + h;
      const A* keys = kp.data() + bh * D * padded;
      const A* values = vp.data() + bh * Dv * padded;
      const A* bias = rpb ? rpb + h * rpb_row : nullptr;
      for (int64_t line = 0; line < lines; ++line) {
        rows.build(g, line);
        const int64_t n_rows = static_cast<int64_t>(rows.token.size());
        for (int64_t x = 0; x < length; ++x) {
          const int64_t n = line * length + x, row = (b * n_tokens + n) * H + h;
          const QueryWindow qw = query_window<A>(last, position, x, n_rows);
          A delta = 0;
          for (int64_t d = 0; d < Dv; ++d) delta += dout[row * Dv + d] * out[row * Dv + d];
          for (int64_t d = 0; d < D; ++d) sc.x[d] = scale * q[row * D + d];
          std::fill(sc.acc.begin(), sc.acc.begin() + D, A(0));
          const A top = lse[bh * n_tokens + n];
          const A* dout_row = dout + row * Dv;
          for (int64_t j0 = 0; j0 < qw.vectors; j0 += kBlock) {
            const Block<A, R> blk(qw, j0, rows, last.dilation, keys, values);
            Vec score[kBlock], dprob[kBlock];
            dots(blk.count, sc.x.data(), D, blk.keys.data(), padded, score);
            dots(blk.count, dout_row, Dv, blk.values.data(), padded, dprob);
            int64_t m = 0;
            for (int j = 0; j < blk.count; ++j) {
              if (bias) score[j] += simd::load(bias + blk.bias[j]);
              const auto valid_lanes = simd::first_lanes<A>(blk.valid[j]);
              const Vec p = valid_lanes ? simd::exp(score[j] - top) : Vec{};
              const Vec ds = valid_lanes ? p * (dprob[j] - delta) : Vec{};
              simd::store(sc.w.data() + m, p);
              simd::store(sc.w2.data() + m, ds);
              for (int64_t t = 0; t < blk.valid[j]; ++t) {
                const int64_t key = head + (blk.token[j] + t * last.dilation) * H;
                sc.rows[m + t] = k + key * D;
                sc.rows2[m + t] = dk + key * D;
                sc.rows3[m + t] = dv + key * Dv;
                if (drpb) drpb[bh * g.bias_size + blk.bias[j] + t] += sc.w2[m + t];
              }
              m += blk.valid[j];
            }
            gather_axpy(sc.acc.data(), D, sc.w2.data(), sc.rows.data(), m);
            scatter_axpy(sc.rows2.data(), sc.w2.data(), m, sc.x.data(), D);
            scatter_axpy(sc.rows3.data(), sc.w.data(), m, dout_row, Dv);
          }
          for (int64_t d = 0; d < D; ++d) dq[row * D + d] = static_cast<T>(scale * sc.acc[d]);
        }
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
