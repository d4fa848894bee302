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
#include <type_traits>
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
// broadcast, W keys per vector (32-byte vectors, or 64-byte ones under AVX-512 where a row fills
// as many of their lanes: with_key_width). Vectors are taken kBlock at a time
// (their accumulators stay in registers across d); the softmax is online across blocks, and the
// weighted values of a block are summed into an output kept in registers.

constexpr int kBlock = 8;             // score vectors per step
constexpr int64_t kLineChunk = 64;    // queries of one line per parallel work item
constexpr int64_t kBiasPad = 16;      // zero tail of each head's bias table row (>= any W)

// Lanes of the widest key vector: the packed rows' zero tail and a block's weights hold this many.
template <typename A>
constexpr int kMaxKeyLanes = 64 / sizeof(A);

// Calls fn(std::integral_constant<int, Bytes>{}) with the key vectors' width for windows of
// `keys` keys per row: 64 bytes where AVX-512 is the target and a row fills as many lanes of
// 64-byte vectors as of 32-byte ones (an even number of 32-byte vectors: K in 9..16, 25..32, ...),
// so one 16-wide FMA does the work of two 8-wide ones; else 32 bytes. Measured at 56x56, D=32:
// 64 bytes is 13-16% faster at K = 9 and 13, 6-7% at 25 and 31, and 10-11% slower at 17 and 21.
template <typename A, typename Fn>
inline void with_key_width(int64_t keys, Fn&& fn) {
  constexpr int N = simd::kWidth<A>;
  if constexpr (simd::kWideBytes == 64)
    if (keys > N && (keys + N - 1) / N % 2 == 0) return fn(std::integral_constant<int, 64>{});
  fn(std::integral_constant<int, 32>{});
}

// Position of each last-axis coordinate in its packed line: dilation groups one after another.
inline std::vector<int64_t> line_positions(const Axis& last) {
  std::vector<int64_t> position(last.length);
  int64_t next = 0;
  for (int64_t group = 0; group < last.dilation && group < last.length; ++group)
    for (int64_t x = group; x < last.length; x += last.dilation) position[x] = next++;
  return position;
}

// P, the length of one packed row: the tokens, a zero tail of at least one vector for
// full-width loads, rounded up so that every row starts on a cache line.
template <typename A>
inline int64_t packed_row(int64_t n_tokens) {
  constexpr int64_t line = 64 / sizeof(A);
  return (n_tokens + kMaxKeyLanes<A> + line - 1) / line * line;
}

// Elements of the packed copy of a [B, N, H, dim] tensor (the caller allocates it, 64-byte
// aligned, so that it counts in the caller's memory measurements).
template <typename A>
inline int64_t packed_size(const Shape& s, int64_t n_tokens, int64_t dim) {
  return s.batch * s.heads * dim * packed_row<A>(n_tokens);
}

// x: heads-last [B, N, H, dim] -> out [B, H, dim, P], P = packed_row(N).
// Consecutive members of a dilation group are consecutive in P, so W of them and W dims are
// moved as one register transpose; the ragged edges go one value at a time.
template <int R, typename A>
void pack(const Geometry<R>& g, const Shape& s, const A* x, int64_t dim,
          const std::vector<int64_t>& position, A* out) {
  constexpr int W = simd::kWidth<A>;
  const Axis& last = g.axes[R - 1];
  const int64_t n_tokens = g.tokens, length = last.length, H = s.heads;
  const int64_t padded = packed_row<A>(n_tokens), lines = n_tokens / length, token = H * dim;
#pragma omp parallel for schedule(static)
  for (int64_t item = 0; item < s.batch * H * lines; ++item) {
    const int64_t b = item / (H * lines), h = (item / lines) % H, line = item % lines;
    A* dst = out + (b * H + h) * dim * padded;
    const A* src = x + ((b * n_tokens + line * length) * H + h) * dim;
    if (line == lines - 1)
      for (int64_t d = 0; d < dim; ++d) std::fill(dst + d * padded + n_tokens, dst + (d + 1) * padded, A(0));
    dst += line * length;
    for (int64_t group = 0; group < std::min(last.dilation, length); ++group) {
      const int64_t members = (length - group + last.dilation - 1) / last.dilation;
      const int64_t step = last.dilation * token, first = position[group];
      int64_t i = 0;
      for (; i + W <= members; i += W) {
        const A* from = src + (group + i * last.dilation) * token;
        int64_t d = 0;
        for (; d + W <= dim; d += W) {
          simd::Vec<A> r[W];
          for (int t = 0; t < W; ++t) r[t] = simd::load(from + t * step + d);
          simd::transpose(r);
          for (int t = 0; t < W; ++t) simd::store(dst + (d + t) * padded + first + i, r[t]);
        }
        for (; d < dim; ++d)
          for (int t = 0; t < W; ++t) dst[d * padded + first + i + t] = from[t * step + d];
      }
      for (; i < members; ++i)
        for (int64_t d = 0; d < dim; ++d)
          dst[d * padded + first + i] = src[(group + i * last.dilation) * token + d];
    }
  }
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

template <int W>
QueryWindow query_window(const Axis& last, const std::vector<int64_t>& position, int64_t x,
                         int64_t rows) {
  QueryWindow q;
  q.last = axis_window(last, x);
  q.packed_first = position[q.last.first];
  q.chunks = (q.last.count + W - 1) / W;
  q.vectors = rows * q.chunks;
  return q;
}

// Vectors [first, first + count) of a query window, walked once with the row carried (no division
// per vector, and scalar stores only: a vectorized read of scalar stores would stall on
// store-to-load forwarding): for each vector, where its keys start in the packed keys (and in
// the packed values, for backward), the token of its first key, its bias index and how many of
// its lanes are keys. W: lanes per vector.
template <typename A, int R, int W>
struct Block {
  int count;
  std::array<const A*, kBlock> keys, values;
  std::array<int64_t, kBlock> token, bias, valid;

  Block(const QueryWindow& qw, int64_t first, const LineRows<R>& rows, int64_t dilation,
        const A* packed_keys, const A* packed_values)
      : count(static_cast<int>(std::min<int64_t>(kBlock, qw.vectors - first))) {
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

// acc[j] = sum_d x[d] * at[j][d * stride : +W] for j < G: G accumulators (vectors V) in registers.
template <int G, typename V, typename A>
inline void dots(const A* x, int64_t dim, const A* const* at, int64_t stride, V* acc) {
  V sum[G];
  for (int j = 0; j < G; ++j) sum[j] = V{};
  for (int64_t d = 0; d < dim; ++d) {
    const V xd = simd::splat<V>(x[d]);
    for (int j = 0; j < G; ++j) sum[j] += xd * simd::load<V>(at[j] + d * stride);
  }
  for (int j = 0; j < G; ++j) acc[j] = sum[j];
}

// Calls fn(std::integral_constant<int, G>{}) with G = count in [1, kBlock]: a block's vectors
// then stay in registers and the loops over them unroll.
template <typename Fn>
inline void with_count(int count, Fn&& fn) {
  static_assert(kBlock == 8, "one case per block size");
  switch (count) {
    case 1: return fn(std::integral_constant<int, 1>{});
    case 2: return fn(std::integral_constant<int, 2>{});
    case 3: return fn(std::integral_constant<int, 3>{});
    case 4: return fn(std::integral_constant<int, 4>{});
    case 5: return fn(std::integral_constant<int, 5>{});
    case 6: return fn(std::integral_constant<int, 6>{});
    case 7: return fn(std::integral_constant<int, 7>{});
    default: return fn(std::integral_constant<int, 8>{});
  }
}

// Calls fn(offset, std::integral_constant<int, V>, vector) over [0, dim): pieces of V <= 8 wide
// vectors, then one 32-byte vector where the rest still holds one (wide vectors are wider), then
// V = 0 for a scalar tail. The vector argument is a zero of the type to use: kernels over a row
// keep V such vectors in registers.
template <typename A, typename Fn>
inline void vector_pieces(int64_t dim, Fn&& fn) {
  constexpr int W = simd::kWideWidth<A>, N = simd::kWidth<A>;
  const simd::Wide<A> wide{};
  int64_t d = 0;
  for (; d + 8 * W <= dim; d += 8 * W) fn(d, std::integral_constant<int, 8>{}, wide);
  switch ((dim - d) / W) {
    case 7: fn(d, std::integral_constant<int, 7>{}, wide); break;
    case 6: fn(d, std::integral_constant<int, 6>{}, wide); break;
    case 5: fn(d, std::integral_constant<int, 5>{}, wide); break;
    case 4: fn(d, std::integral_constant<int, 4>{}, wide); break;
    case 3: fn(d, std::integral_constant<int, 3>{}, wide); break;
    case 2: fn(d, std::integral_constant<int, 2>{}, wide); break;
    case 1: fn(d, std::integral_constant<int, 1>{}, wide); break;
    default: break;
  }
  d = dim - dim % W;
  if constexpr (W > N) {
    if (dim - d >= N) fn(d, std::integral_constant<int, 1>{}, simd::Vec<A>{}), d += N;
  }
  if (d < dim) fn(d, std::integral_constant<int, 0>{}, simd::Vec<A>{});
}

// A block's keys as runs: vector j of the block has blk.valid[j] keys, the t-th at row
// (blk.token[j] + t * dilation) * row_stride of a heads-last tensor (base already at the head),
// with weight w[j * KW + t] (KW: the block's lanes per vector). The AV-like products walk these
// runs directly.

// y[0:dim] += sum over the block's keys of weight * base[key row][0:dim].
template <typename A, int R, int KW>
inline void gather_block(A* y, int64_t dim, const A* w, const A* base, const Block<A, R, KW>& blk,
                         int64_t row_stride, int64_t dilation) {
  const int64_t step = dilation * row_stride;
  vector_pieces<A>(dim, [&](int64_t d0, auto pieces, auto vector) {
    constexpr int V = decltype(pieces)::value;
    using Vt = decltype(vector);
    constexpr int W = sizeof(Vt) / sizeof(A);
    if constexpr (V == 0) {
      for (int j = 0; j < blk.count; ++j)
        for (int64_t t = 0; t < blk.valid[j]; ++t) {
          const A* r = base + blk.token[j] * row_stride + t * step;
          for (int64_t d = d0; d < dim; ++d) y[d] += w[j * KW + t] * r[d];
        }
    } else {
      // Even and odd keys sum apart: 2V independent FMA chains hide the FMA latency.
      Vt even[V], odd[V];
      for (int i = 0; i < V; ++i) even[i] = simd::load<Vt>(y + d0 + i * W), odd[i] = Vt{};
      for (int j = 0; j < blk.count; ++j) {
        const A* r = base + blk.token[j] * row_stride + d0;
        const A* wj = w + j * KW;
        int64_t t = 0;
        for (; t + 1 < blk.valid[j]; t += 2, r += 2 * step) {
          const Vt we = simd::splat<Vt>(wj[t]), wo = simd::splat<Vt>(wj[t + 1]);
          for (int i = 0; i < V; ++i) {
            even[i] += we * simd::load<Vt>(r + i * W);
            odd[i] += wo * simd::load<Vt>(r + step + i * W);
          }
        }
        if (t < blk.valid[j]) {
          const Vt we = simd::splat<Vt>(wj[t]);
          for (int i = 0; i < V; ++i) even[i] += we * simd::load<Vt>(r + i * W);
        }
      }
      for (int i = 0; i < V; ++i) simd::store(y + d0 + i * W, even[i] + odd[i]);
    }
  });
}

// base[key row][0:dim] += weight * x[0:dim] for every key of the block.
template <typename A, int R, int KW>
inline void scatter_block(A* base, int64_t row_stride, int64_t dilation, const Block<A, R, KW>& blk,
                          const A* w, const A* x, int64_t dim) {
  const int64_t step = dilation * row_stride;
  vector_pieces<A>(dim, [&](int64_t d0, auto pieces, auto vector) {
    constexpr int V = decltype(pieces)::value;
    using Vt = decltype(vector);
    constexpr int W = sizeof(Vt) / sizeof(A);
    Vt xs[V > 0 ? V : 1];
    for (int i = 0; i < V; ++i) xs[i] = simd::load<Vt>(x + d0 + i * W);
    for (int j = 0; j < blk.count; ++j) {
      A* r = base + blk.token[j] * row_stride + d0;
      for (int64_t t = 0; t < blk.valid[j]; ++t, r += step) {
        const A wt = w[j * KW + t];
        if constexpr (V == 0) {
          for (int64_t d = 0; d < dim - d0; ++d) r[d] += wt * x[d0 + d];
        } else {
          const Vt we = simd::splat<Vt>(wt);
          for (int i = 0; i < V; ++i) simd::store(r + i * W, simd::load<Vt>(r + i * W) + we * xs[i]);
        }
      }
    }
  });
}

// Asks for the cache lines of x[0:n] ahead of use (for writing when `write`); a hint, so reading
// past the end of the tensor is harmless.
template <typename T>
inline void prefetch_row(const T* x, int64_t n, bool write) {
  const char* p = reinterpret_cast<const char*>(x);
  for (int64_t byte = 0; byte < n * static_cast<int64_t>(sizeof(T)); byte += 64)
    write ? __builtin_prefetch(p + byte, 1) : __builtin_prefetch(p + byte, 0);
}

// Per-thread scratch of the fused kernels, sized once: the scaled query, the output or dQ
// accumulator, and a block's weights (w) and score gradients (w2), W per vector.
template <typename A>
struct Scratch {
  std::vector<A> x, acc;
  std::array<A, kBlock * kMaxKeyLanes<A>> w, w2;
  Scratch(int64_t dim, int64_t dim_v) : x(dim), acc(std::max(dim, dim_v)) {}
};

// Fused forward. q, k, v are heads-last in the accumulation type A; rpb is the bias table
// [H, bias_size + kBiasPad] in A (zero tail); out is written in T; lse [B, H, N] is kept for backward.
// KB: the key vectors' width in bytes (with_key_width). packed_keys: packed_size(s, N, D) elements.
template <int R, typename T, typename A, int KB>
void fused_forward(const Geometry<R>& g, const Shape& s, const A* q, const A* k, const A* v,
                   const A* rpb, T* out, A* lse, A scale, A* packed_keys) {
  using Vec = simd::VecN<A, KB>;
  constexpr int W = simd::kLanes<Vec>;
  const int64_t n_tokens = g.tokens, H = s.heads, D = s.dim, Dv = s.dim_v;
  const Axis& last = g.axes[R - 1];
  const int64_t length = last.length, lines = n_tokens / length;
  const int64_t chunks = (length + kLineChunk - 1) / kLineChunk, padded = packed_row<A>(n_tokens);
  const int64_t rpb_row = g.bias_size + kBiasPad;
  static_assert(kBiasPad >= W, "bias rows need a full vector of tail");
  const auto position = line_positions(last);
  pack(g, s, k, D, position, packed_keys);
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
      const A* keys = packed_keys + (b * H + h) * D * padded;
      const A* values = v + (b * n_tokens * H + h) * Dv;
      const A* bias = rpb ? rpb + h * rpb_row : nullptr;
      for (int64_t x = x0; x < std::min(length, x0 + kLineChunk); ++x) {
        const int64_t n = line * length + x, row = (b * n_tokens + n) * H + h;
        const QueryWindow qw = query_window<W>(last, position, x, n_rows);
        // The next query's row and output (a head's rows are H rows apart: no stream to prefetch).
        prefetch_row(q + (row + H) * D, D, false);
        prefetch_row(out + (row + H) * Dv, Dv, true);
        for (int64_t d = 0; d < D; ++d) sc.x[d] = scale * q[row * D + d];
        std::fill(sc.acc.begin(), sc.acc.begin() + Dv, A(0));
        A top = -std::numeric_limits<A>::infinity();
        Vec sums{};
        for (int64_t j0 = 0; j0 < qw.vectors; j0 += kBlock) {
          const Block<A, R, W> blk(qw, j0, rows, last.dilation, keys, nullptr);
          with_count(blk.count, [&](auto count) {
            constexpr int G = decltype(count)::value;
            Vec score[G];
            dots<G, Vec>(sc.x.data(), D, blk.keys.data(), padded, score);
            const Vec none = simd::splat<Vec>(-std::numeric_limits<A>::infinity());
            Vec tops = none;
            for (int j = 0; j < G; ++j) {
              if (bias) score[j] += simd::load<Vec>(bias + blk.bias[j]);
              score[j] = simd::first_lanes<Vec>(blk.valid[j]) ? score[j] : none;
              tops = score[j] > tops ? score[j] : tops;
            }
            const A block_top = simd::max_lane(tops);
            if (block_top > top) {  // online softmax: rescale what the earlier blocks summed
              const A factor = j0 > 0 ? std::exp(top - block_top) : A(0);
              for (int64_t d = 0; d < Dv; ++d) sc.acc[d] *= factor;
              sums *= factor;
              top = block_top;
            }
            for (int j = 0; j < G; ++j) {
              const Vec p = simd::exp(score[j] - top);
              sums += p;
              simd::store(sc.w.data() + j * W, p);
            }
          });
          gather_block(sc.acc.data(), Dv, sc.w.data(), values, blk, H * Dv, last.dilation);
        }
        const A total = simd::sum_lanes(sums);
        T* o = out + row * Dv;
        const A inverse = A(1) / total;
        for (int64_t d = 0; d < Dv; ++d) o[d] = static_cast<T>(sc.acc[d] * inverse);
        lse[(b * H + h) * n_tokens + n] = top + std::log(total);
      }
    }
  }
}

// Fused backward from the saved log-sum-exp: per query, P and dP = dO . V over its window by
// the forward's vector blocks, dS = P (dP - delta), then dQ gathered from the keys and dK, dV
// scattered to them. Work is split by (batch, head), so a thread owns the dk, dv and bias
// gradient it writes. All inputs heads-last in A; dk, dv accumulate in A; drpb is [B, H, bias_size].
// packed_keys, packed_values: packed_size(s, N, D) and packed_size(s, N, Dv) elements.
template <int R, typename T, typename A, int KB>
void fused_backward(const Geometry<R>& g, const Shape& s, const A* q, const A* k, const A* v,
                    const A* rpb, const A* out, const A* dout, const A* lse, T* dq, A* dk, A* dv,
                    A* drpb, A scale, A* packed_keys, A* packed_values) {
  using Vec = simd::VecN<A, KB>;
  constexpr int W = simd::kLanes<Vec>;
  const int64_t n_tokens = g.tokens, H = s.heads, D = s.dim, Dv = s.dim_v;
  const Axis& last = g.axes[R - 1];
  const int64_t length = last.length, lines = n_tokens / length, padded = packed_row<A>(n_tokens);
  const int64_t rpb_row = g.bias_size + kBiasPad;
  static_assert(kBiasPad >= W, "bias rows need a full vector of tail");
  const auto position = line_positions(last);
  pack(g, s, k, D, position, packed_keys);
  pack(g, s, v, Dv, position, packed_values);
#pragma omp parallel
  {
    Scratch<A> sc(D, Dv);
    LineRows<R> rows;
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < s.batch * H; ++bh) {
      const int64_t b = bh / H, h = bh % H, head = b * n_tokens * H + h;
      const A* keys = packed_keys + bh * D * padded;
      const A* values = packed_values + bh * Dv * padded;
      const A* bias = rpb ? rpb + h * rpb_row : nullptr;
      for (int64_t line = 0; line < lines; ++line) {
        rows.build(g, line);
        const int64_t n_rows = static_cast<int64_t>(rows.token.size());
        for (int64_t x = 0; x < length; ++x) {
          const int64_t n = line * length + x, row = (b * n_tokens + n) * H + h;
          const QueryWindow qw = query_window<W>(last, position, x, n_rows);
          A delta = 0;
          for (int64_t d = 0; d < Dv; ++d) delta += dout[row * Dv + d] * out[row * Dv + d];
          for (int64_t d = 0; d < D; ++d) sc.x[d] = scale * q[row * D + d];
          std::fill(sc.acc.begin(), sc.acc.begin() + D, A(0));
          const A top = lse[bh * n_tokens + n];
          const A* dout_row = dout + row * Dv;
          for (int64_t j0 = 0; j0 < qw.vectors; j0 += kBlock) {
            const Block<A, R, W> blk(qw, j0, rows, last.dilation, keys, values);
            with_count(blk.count, [&](auto count) {
              constexpr int G = decltype(count)::value;
              Vec score[G], dprob[G];
              dots<G, Vec>(sc.x.data(), D, blk.keys.data(), padded, score);
              dots<G, Vec>(dout_row, Dv, blk.values.data(), padded, dprob);
              for (int j = 0; j < G; ++j) {
                if (bias) score[j] += simd::load<Vec>(bias + blk.bias[j]);
                const auto valid_lanes = simd::first_lanes<Vec>(blk.valid[j]);
                const Vec p = valid_lanes ? simd::exp(score[j] - top) : Vec{};
                const Vec ds = valid_lanes ? p * (dprob[j] - delta) : Vec{};
                simd::store(sc.w.data() + j * W, p);
                simd::store(sc.w2.data() + j * W, ds);
                if (drpb)
                  for (int64_t t = 0; t < blk.valid[j]; ++t)
                    drpb[bh * g.bias_size + blk.bias[j] + t] += sc.w2[j * W + t];
              }
            });
            gather_block(sc.acc.data(), D, sc.w2.data(), k + head * D, blk, H * D, last.dilation);
            scatter_block(dk + head * D, H * D, last.dilation, blk, sc.w2.data(), sc.x.data(), D);
            scatter_block(dv + head * Dv, H * Dv, last.dilation, blk, sc.w.data(), dout_row, Dv);
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

// y[0:dim] = scale * sum over j < count of w[j] * (base + rows[j] * stride)[0:dim], the sums held
// in registers (vectors along dim) and stored once.
// Summed into a buffer in memory instead, one row at a time (a load and a store per key), the
// unfused AV kernel runs 3x slower, and it and the dq of qk_rpb_backward 1.5-2x slower still in
// some processes than in others (docs/reproducibility.md).
template <typename T, typename A>
inline void weighted_rows(T* y, A scale, const T* w, const T* base, const int64_t* rows,
                          int64_t count, int64_t stride, int64_t dim) {
  // the columns [d0, dim) one at a time: what no whole vector covers
  const auto columns = [&](int64_t d0) {
    for (int64_t d = d0; d < dim; ++d) {
      A sum = 0;
      for (int64_t j = 0; j < count; ++j)
        sum += static_cast<A>(w[j]) * static_cast<A>(base[rows[j] * stride + d]);
      y[d] = static_cast<T>(scale * sum);
    }
  };
  if constexpr (std::is_same_v<T, A>) {
    vector_pieces<A>(dim, [&](int64_t d0, auto pieces, auto vector) {
      constexpr int V = decltype(pieces)::value;
      using Vt = decltype(vector);
      constexpr int W = sizeof(Vt) / sizeof(A);
      if constexpr (V == 0) {
        columns(d0);
      } else {
        Vt sum[V] = {};
        for (int64_t j = 0; j < count; ++j) {
          const Vt wj = simd::splat<Vt>(w[j]);
          const A* r = base + rows[j] * stride + d0;
          for (int i = 0; i < V; ++i) sum[i] += wj * simd::load<Vt>(r + i * W);
        }
        for (int i = 0; i < V; ++i) simd::store(y + d0 + i * W, simd::splat<Vt>(scale) * sum[i]);
      }
    });
  } else {  // half, bfloat16: converted as loaded, a vector's width of sums at a time
    constexpr int C = simd::kWidth<A>;
    int64_t d0 = 0;
    for (; d0 + C <= dim; d0 += C) {
      A sum[C] = {};
      for (int64_t j = 0; j < count; ++j) {
        const A wj = static_cast<A>(w[j]);
        const T* r = base + rows[j] * stride + d0;
        for (int i = 0; i < C; ++i) sum[i] += wj * static_cast<A>(r[i]);
      }
      for (int i = 0; i < C; ++i) y[d0 + i] = static_cast<T>(scale * sum[i]);
    }
    columns(d0);
  }
}

// out_n = sum over slots of attn[b, h, n, slot] * v_key.
template <int R, typename T, typename A>
void av(const Geometry<R>& g, const Shape& s, const T* attn, const T* v, T* out) {
  const int64_t n_tokens = g.tokens, H = s.heads, Dv = s.dim_v, kn = g.window_keys;
#pragma omp parallel
  {
    std::vector<int64_t> keys(kn), bias(kn);
#pragma omp for schedule(static)
    for (int64_t item = 0; item < s.batch * H * n_tokens; ++item) {
      const int64_t b = item / (H * n_tokens), h = (item / n_tokens) % H, n = item % n_tokens;
      const int64_t count = g.neighbors(n, keys.data(), bias.data());
      weighted_rows(out + ((b * n_tokens + n) * H + h) * Dv, A(1), attn + item * kn,
                    v + (b * n_tokens * H + h) * Dv, keys.data(), count, H * Dv, Dv);
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
    std::vector<A> qs(D);
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < s.batch * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      for (int64_t n = 0; n < n_tokens; ++n) {
        const int64_t item = bh * n_tokens + n, row = (b * n_tokens + n) * H + h;
        for (int64_t d = 0; d < D; ++d) qs[d] = scale * static_cast<A>(q[row * D + d]);
        const int64_t count = g.neighbors(n, keys.data(), bias.data());
        weighted_rows(dq + row * D, scale, d_logits + item * kn, k + (b * n_tokens * H + h) * D,
                      keys.data(), count, H * D, D);
        for (int64_t j = 0; j < count; ++j) {
          const A dl = static_cast<A>(d_logits[item * kn + j]);
          axpy(dk + ((b * n_tokens + keys[j]) * H + h) * D, dl, qs.data(), D);
          if (drpb) drpb[bh * g.bias_size + bias[j]] += dl;
        }
      }
    }
  }
}

}  // namespace natbench
