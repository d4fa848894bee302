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
#include <utility>
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

// Elements of the packed copy of a [B, N, H, dim] tensor: the tokens, and a zero tail of two
// vectors for the full-width loads at the very end (a tile's window pair reads two vectors from
// a key inside the line; the caller allocates it, so that it counts in the caller's memory
// measurements).
constexpr int64_t kPackedTailVectors = 2;
template <typename A>
inline int64_t packed_size(const Shape& s, int64_t n_tokens, int64_t dim) {
  return s.batch * s.heads * dim * n_tokens + kPackedTailVectors * kMaxKeyLanes<A>;
}

// x: heads-last [B, N, H, dim] -> out [B, H, lines, dim, length]: each line of the last axis as
// dim rows of its tokens, ordered by dilation group. A window row's keys for one dim are then a
// run of consecutive positions, and the rows of a query's window lie in a few contiguous blocks
// (a block of dim rows per line: few pages and cache sets, where rows the whole map apart would
// touch a page per dim). Consecutive members of a dilation group are consecutive here, so W of
// them and W dims are moved as one register transpose; the ragged edges go one value at a time.
// A vector loaded past a line's end reads the next row's tokens (or the zero tail): the kernels
// mask those lanes.
template <int R, typename A>
void pack(const Geometry<R>& g, const Shape& s, const A* x, int64_t dim,
          const std::vector<int64_t>& position, A* out) {
  constexpr int W = simd::kWidth<A>;
  const Axis& last = g.axes[R - 1];
  const int64_t n_tokens = g.tokens, length = last.length, H = s.heads;
  const int64_t lines = n_tokens / length, token = H * dim;
  std::fill(out + s.batch * H * dim * n_tokens, out + packed_size<A>(s, n_tokens, dim), A(0));
#pragma omp parallel for schedule(static)
  for (int64_t item = 0; item < s.batch * lines; ++item) {
    const int64_t b = item / lines, line = item % lines;
    const int64_t head_part = lines * dim * length;  // one head's packed tensor
    A* dst = out + (b * H * lines + line) * dim * length;
    const A* src = x + (b * n_tokens + line * length) * token;
    for (int64_t group = 0; group < std::min(last.dilation, length); ++group) {
      const int64_t members = (length - group + last.dilation - 1) / last.dilation;
      const int64_t step = last.dilation * token, first = position[group];
      int64_t i = 0;
      // W members' whole heads-last rows, every head, read in their memory order
      for (; i + W <= members; i += W) {
        const A* from = src + (group + i * last.dilation) * token;
        for (int64_t h = 0; h < H; ++h) {
          A* to = dst + h * head_part + first + i;
          const A* head = from + h * dim;
          int64_t d = 0;
          for (; d + W <= dim; d += W) {
            simd::Vec<A> r[W];
            for (int t = 0; t < W; ++t) r[t] = simd::load(head + t * step + d);
            simd::transpose(r);
            for (int t = 0; t < W; ++t) simd::store(to + (d + t) * length, r[t]);
          }
          for (; d < dim; ++d)
            for (int t = 0; t < W; ++t) to[d * length + t] = head[t * step + d];
        }
      }
      for (; i < members; ++i)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t d = 0; d < dim; ++d)
            dst[h * head_part + d * length + first + i] = src[(group + i * last.dilation) * token + h * dim + d];
    }
  }
}

// The window rows shared by every query of one line: the token where each key line starts and
// the bias index of each row's first last-axis offset.
template <int R>
struct LineRows {
  std::vector<int64_t> token, line, bias;  // line: the row's line, token / length

  void build(const Geometry<R>& g, int64_t line) {
    const int64_t start = line * g.axes[R - 1].length;
    std::array<AxisWindow, R> w;
    int64_t count = 1;
    for (int d = 0; d < R - 1; ++d) {
      w[d] = axis_window(g.axes[d], (start / g.token_stride[d]) % g.axes[d].length);
      count *= w[d].count;
    }
    token.resize(count);
    this->line.resize(count);
    bias.resize(count);
    std::array<int64_t, R> t{};
    for (int64_t r = 0; r < count; ++r) {
      token[r] = bias[r] = 0;
      for (int d = 0; d < R - 1; ++d) {
        token[r] += (w[d].first + t[d] * g.axes[d].dilation) * g.token_stride[d];
        bias[r] += (w[d].bias0 + t[d]) * g.bias_stride[d];
      }
      this->line[r] = token[r] / g.axes[R - 1].length;
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
// the packed values, for backward; key_line and value_line are a packed line's elements), the
// token of its first key, its bias index and how many of its lanes are keys. W: lanes per vector.
template <typename A, int R, int W>
struct Block {
  int count;
  std::array<const A*, kBlock> keys, values;
  std::array<int64_t, kBlock> token, bias, valid;

  Block(const QueryWindow& qw, int64_t first, const LineRows<R>& rows, int64_t dilation,
        const A* packed_keys, int64_t key_line, const A* packed_values, int64_t value_line)
      : count(static_cast<int>(std::min<int64_t>(kBlock, qw.vectors - first))) {
    int64_t r = first / qw.chunks, c = first % qw.chunks * W;
    for (int j = 0; j < count; ++j) {
      keys[j] = packed_keys + rows.line[r] * key_line + qw.packed_first + c;
      values[j] = packed_values ? packed_values + rows.line[r] * value_line + qw.packed_first + c : nullptr;
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

// prefetch_row for `count` rows of dim elements, `step` rows apart from row (a tile's).
template <typename T>
inline void prefetch_rows(const T* x, int64_t row, int64_t step, int count, int64_t dim, bool write) {
  for (int t = 0; t < count; ++t) prefetch_row(x + (row + t * step) * dim, dim, write);
}

// Per-thread scratch of the fused kernels, sized once: the scaled query, the output or dQ
// accumulator, and a block's weights (w) and score gradients (w2), W per vector.
template <typename A>
struct Scratch {
  std::vector<A> x, acc;
  std::array<A, kBlock * kMaxKeyLanes<A>> w, w2;
  Scratch(int64_t dim, int64_t dim_v) : x(dim), acc(std::max(dim, dim_v)) {}
};

// ---- Query tiles: L queries of a line as the L lanes of one vector. ----
//
// L queries that follow each other in a packed line (one dilation group, each with a full window
// of `count` keys per row) see windows whose starts differ by less than L: query t's key c of
// window row r sits at packed position row_r + first_t + c. So the scores of window key (r, c)
// for all L queries are one vector: sum_d Qt[d] * packed[d, row_r + base + c : + L], its lanes
// permuted by first_t - base, with Qt the tile's queries transposed and base the smallest first_t.
// Away from the borders (and with query stride 1) first_t = base + t and no permute is needed.
// The bias of key (r, c) is one table row read at bias0_t + c, the softmax runs lane by lane
// over the window's score vectors (no horizontal reductions). The forward's weighted sum runs
// the other way, along the head dim: query t's output row is sum_(r, c) P[r, c][t] * v[key], the
// weight broadcast against the value rows where they are (tile_row_sums), so the output needs no
// transpose and the values no packed copy; the backward's dQ sums the packed keys per d as
// the scores do (tile_sums). Every product is a useful multiply-add, where a dense GEMM over the
// tile's key region would waste (L + K - 1) / K of them. Queries no tile covers (a line or group
// shorter than L, causal windows still growing) go one by one.

// A tile's vector: its lanes are the tile's queries. As wide as the machine's widest vectors: on
// Zen 4, where a 64-byte FMA is two 32-byte halves, 32-byte tiles still measured 1.2-1.5x slower
// at K = 3 and 7 (56x56, D = 32) for having twice the tiles, transposes and window walks.
constexpr int kTileBytes = simd::kWideBytes;
template <typename A>
using TileVec = simd::VecN<A, kTileBytes>;

// A half tile: the end of a line or dilation group that half a tile's lanes cover, where a whole
// tile would overlap the one before by more than half its lanes (56 = 3 x 16 + 8 queries: four
// whole tiles compute 64). Its 32-byte vectors cost about half a 64-byte tile's on Zen 4; under
// AVX2, whose tiles are 32-byte already, there are none.
constexpr bool kHalfTiles = kTileBytes == 64;
template <typename A>
using HalfTileVec = simd::VecN<A, kTileBytes / 2>;


// Per packed position of a line (the same for every line: only the last axis decides): its
// coordinate along the last axis, its window's first key (packed position), bias index and key
// count, and where the tile that covers it starts (-1: none) and its lanes. Tiles follow each
// other from a group's start; the last one of a group ends at the group's end, a half tile
// (half_lanes, 0: none) where the rest fits in one, else a whole tile overlapping the one before.
struct LineTiles {
  std::vector<int64_t> coordinate, first, bias0, count, start;
  std::vector<int> width;

  LineTiles(const Axis& last, const std::vector<int64_t>& position, int lanes, int half_lanes)
      : coordinate(last.length), first(last.length), bias0(last.length), count(last.length),
        start(last.length, -1), width(last.length, 0) {
    for (int64_t x = 0; x < last.length; ++x) {
      const int64_t p = position[x];
      const AxisWindow w = axis_window(last, x);
      coordinate[p] = x, first[p] = position[w.first], bias0[p] = w.bias0, count[p] = w.count;
    }
    // [p, p + n): one group, one key count, and the lanes' first keys and bias indices each
    // within n of their smallest (a permute's reach)
    const auto whole = [&](int64_t p, int n) {
      const int64_t x = coordinate[p], last_x = x + (n - 1) * last.dilation;
      if (last_x >= last.length || position[last_x] != p + n - 1) return false;
      const auto spread = [&](const std::vector<int64_t>& v) {
        const auto [low, high] = std::minmax_element(v.begin() + p, v.begin() + p + n);
        return *high - *low;
      };
      for (int t = 1; t < n; ++t)
        if (count[p + t] != count[p]) return false;
      return spread(first) < n && spread(bias0) < n;
    };
    // positions [from, end) to the tile [p0, p0 + n)
    const auto cover = [&](int64_t from, int64_t end, int64_t p0, int n) {
      std::fill(start.begin() + from, start.begin() + end, p0);
      std::fill(width.begin() + from, width.begin() + end, n);
    };
    for (int64_t group = 0; group < std::min(last.dilation, last.length); ++group) {
      const int64_t begin = position[group], end = begin + (last.length - group + last.dilation - 1) / last.dilation;
      int64_t p = begin;
      for (; p + lanes <= end; p += lanes)
        if (whole(p, lanes)) cover(p, p + lanes, p, lanes);
      if (p == end) continue;
      if (half_lanes && end - p <= half_lanes && end - half_lanes >= begin && whole(end - half_lanes, half_lanes))
        cover(p, end, end - half_lanes, half_lanes);
      else if (end - lanes >= begin && whole(end - lanes, lanes))
        cover(p, end, end - lanes, lanes);
    }
  }
};

// One tile's window geometry: the smallest first key and bias index over its lanes, each lane's
// offsets from them, and whether the lanes are plainly shifted (offsets t and 0: no permutes).
// Where the lanes are a shifted run [run_first, run_last) (key_index[t] = t + run_offset) with
// the lanes before and after it clamped to the run's first and last window (a tile at a
// border, query stride 1), runs is set.
template <typename V>
struct TileWindow {
  int64_t count, base, bias_base;
  simd::MaskOf<V> key_index, bias_index;
  bool shifted, runs;
  int run_first, run_last, run_offset;

  TileWindow(const LineTiles& tiles, int64_t p0) : count(tiles.count[p0]) {
    constexpr int L = simd::kLanes<V>;
    base = bias_base = std::numeric_limits<int64_t>::max();
    for (int t = 0; t < L; ++t)
      base = std::min(base, tiles.first[p0 + t]), bias_base = std::min(bias_base, tiles.bias0[p0 + t]);
    shifted = true;
    for (int t = 0; t < L; ++t) {
      key_index[t] = tiles.first[p0 + t] - base, bias_index[t] = tiles.bias0[p0 + t] - bias_base;
      shifted = shifted && key_index[t] == t && bias_index[t] == 0;
    }
    int a = 0;
    while (a + 1 < L && key_index[a + 1] == key_index[a]) ++a;
    int b = a + 1;
    while (b < L && key_index[b] == key_index[b - 1] + 1) ++b;
    runs = true;
    for (int t = b; t < L; ++t) runs = runs && key_index[t] == key_index[b - 1];
    run_first = a, run_last = b, run_offset = static_cast<int>(key_index[a]) - a;
  }
};

// Calls fn(tw, shifted) for the tile at packed position p0 of `lanes` lanes (LineTiles::width):
// tw its TileWindow over the vector of that many lanes (TileVec, or HalfTileVec for a half
// tile), shifted a std::bool_constant of tw.shifted, so that the tile code compiles once per
// kind of tile.
template <typename A, typename Fn>
inline void with_tile(const LineTiles& tiles, int64_t p0, int lanes, Fn&& fn) {
  const auto run = [&](auto vec) {
    const TileWindow<decltype(vec)> tw(tiles, p0);
    if (tw.shifted)
      fn(tw, std::true_type{});
    else
      fn(tw, std::false_type{});
  };
  if constexpr (kHalfTiles) {
    if (lanes < simd::kLanes<TileVec<A>>) return run(HalfTileVec<A>{});
  }
  run(TileVec<A>{});
}

// Scratch of one thread's tiles: the queries transposed [dim][L], the window's score vectors
// [keys][L], where each window row starts in the head's packed keys, and the heads-last row
// (b, token, h) of each window row's key at the tile's base.
template <typename A>
struct TileScratch {
  std::vector<A> qt, s;
  std::vector<const A*> row_keys;
  std::vector<int64_t> row_head;
  TileScratch(int64_t dim, int64_t dim_v, int64_t window_keys, int lanes)
      : qt(std::max(dim, dim_v) * lanes), s(window_keys * lanes), row_keys(window_keys), row_head(window_keys) {}
};

// Window vector J of a tile loop's block of G: (row + J)[0 : L], lanes permuted by `index` unless
// Shifted. Where two-source windows are one instruction and the block has at least
// kMinPairWindows windows, a shifted window is cut out of the two vectors loaded at row (lo, hi:
// up to 2 L elements read from row) by valignd, and so is a permuted one where PairPermute
// (vpermt2ps with at[J] = index + J); else the window is loaded unaligned and permuted. Measured
// on Zen 4 in one process against unaligned loads (one thread, 56x56, D = 32): the forward 5-8%
// faster at K = 7, 10% at 13 and 16% at 112x112, K = 7; with pairs for blocks of 3 (K = 3), 6-7%
// slower, hence the minimum. For the permuted tiles vpermt2ps made the weighted sums about 10%
// faster but the scores 2% slower (a 32-deep micro-benchmark: 0.53 against 0.50 ns a
// multiply-add), so the scores keep the load and permute.
constexpr int kMinPairWindows = 4;
template <bool Shifted, bool PairPermute, int G, typename V>
constexpr bool kWindowPair = simd::kTwoSourceWindows<V> && (Shifted || PairPermute) && G >= kMinPairWindows;

template <bool Shifted, bool PairPermute, int G, typename V, typename A>
inline void tile_window_pair(const A* row, V& lo, V& hi) {
  if constexpr (kWindowPair<Shifted, PairPermute, G, V>)
    lo = simd::load<V>(row), hi = simd::load<V>(row + simd::kLanes<V>);
}

template <bool Shifted, bool PairPermute, int G, int J, typename V, typename A>
inline V tile_window(const A* row, const V& lo, const V& hi, const simd::MaskOf<V>* at, const simd::MaskOf<V>& index) {
  if constexpr (kWindowPair<Shifted, PairPermute, G, V>) {
    if constexpr (Shifted) return simd::window<J>(lo, hi);
    else return simd::window_permute(lo, hi, at[J]);
  } else {
    const V x = simd::load<V>(row + J);
    if constexpr (Shifted) return x;
    else return simd::permute(x, index);
  }
}

// The lane indices of a block's G windows for window_permute: index + j.
template <int G, typename V>
inline void window_indices(const simd::MaskOf<V>& index, simd::MaskOf<V>* at) {
  for (int j = 0; j < G; ++j) at[j] = index + static_cast<typename simd::LanesOf<V>::I>(j);
}

// acc[j] = sum_d qt[d] * (base + j)[d * stride : + L] for j < G, lanes permuted by `index` unless
// Shifted: G key vectors of one window row against the tile's queries.
template <int G, bool Shifted, typename V, typename A>
inline void tile_dots(const A* qt, int64_t dim, const A* base, int64_t stride, const simd::MaskOf<V>& index,
                      V* acc) {
  constexpr int L = simd::kLanes<V>;
  V sum[G];
  for (int j = 0; j < G; ++j) sum[j] = V{};
  for (int64_t d = 0; d < dim; ++d) {
    const V x = simd::load<V>(qt + d * L);
    const A* row = base + d * stride;
    V lo{}, hi{};
    tile_window_pair<Shifted, false, G>(row, lo, hi);
    simd::unrolled<G>([&](auto j) { sum[j] += x * tile_window<Shifted, false, G, j>(row, lo, hi, nullptr, index); });
  }
  for (int j = 0; j < G; ++j) acc[j] = sum[j];
}

// Calls fn(c0, std::integral_constant<int, G>) over [0, count) in pieces of G <= kBlock.
template <typename Fn>
inline void in_blocks(int64_t count, Fn&& fn) {
  for (int64_t c0 = 0; c0 < count; c0 += kBlock)
    with_count(static_cast<int>(std::min<int64_t>(kBlock, count - c0)), [&](auto g) { fn(c0, g); });
}

// ot[d] = sum_k w[k] * (rows[r] + c)[d * stride : + L] for d < dim, k over the window's keys in
// (row, column) order, lanes permuted by `index` unless Shifted: the tile's weighted sum of
// packed rows, kBlock dims at a time in registers.
template <bool Shifted, typename V, typename A>
inline void tile_sums(A* ot, int64_t dim, const A* w, const A* const* rows, int64_t n_rows, int64_t cols,
                      int64_t stride, const simd::MaskOf<V>& index) {
  constexpr int L = simd::kLanes<V>;
  in_blocks(dim, [&](int64_t d0, auto g) {
    constexpr int G = decltype(g)::value;
    V sum[G];
    for (int j = 0; j < G; ++j) sum[j] = V{};
    for (int64_t r = 0; r < n_rows; ++r) {
      const A* row = rows[r] + d0 * stride;
      // C columns [c0, c0 + C) of the row: their weights in registers, their windows cut per dim
      in_blocks(cols, [&](int64_t c0, auto c_) {
        constexpr int C = decltype(c_)::value;
        V p[C];
        for (int c = 0; c < C; ++c) p[c] = simd::load<V>(w + (r * cols + c0 + c) * L);
        if constexpr (kWindowPair<Shifted, true, C, V>) {
          simd::MaskOf<V> at[C];
          if constexpr (!Shifted) window_indices<C, V>(index, at);
          for (int j = 0; j < G; ++j) {
            const A* at_dim = row + j * stride + c0;
            V lo, hi;
            tile_window_pair<Shifted, true, C>(at_dim, lo, hi);
            simd::unrolled<C>([&](auto c) { sum[j] += p[c] * tile_window<Shifted, true, C, c>(at_dim, lo, hi, at, index); });
          }
        } else {  // a column's G dims one after another: independent accumulators back to back
          simd::unrolled<C>([&](auto c) {
            for (int j = 0; j < G; ++j)
              sum[j] += p[c] * tile_window<Shifted, true, C, c>(row + j * stride + c0, V{}, V{}, nullptr, index);
          });
        }
      });
    }
    for (int j = 0; j < G; ++j) simd::store(ot + (d0 + j) * L, sum[j]);
  });
}

// The tile's weighted sum as query rows: y_t[0:dim] = factor[t] * sum over window keys (r, c) of
// w[(r * cols + c) * L + t] * x_r[(key_t + c) * x_step][0:dim], for t < L, with key_t = t where
// Shifted (else key_index[t]), x_r = x + row[r] * x_dim (a heads-last row: the window row's key
// at the tile's base) and y_t = y + t * y_stride. The sums run along the head dim, Q queries x P
// vectors of them in registers (16 with AVX-512's 32 registers, 8 with AVX2's 16), each weight
// broadcast: no shuffles and no transposes, and the rows are read where they are (no packed
// copy). In a shifted tile each key row loaded serves every query whose window holds it (t and c
// unrolled). The dims that fill no whole vector go by 32- and 16-byte vectors, the last few
// (dim not a multiple of 4 floats) one by one. Measured in one process against the per-d sums
// of packed values and the output transpose (one thread, D = 32, four heads): the forward's time
// 0.81x at K = 7, 0.79x at 112x112, 0.88x at K = 13. The backward's dQ keeps the per-d sums of
// the packed keys, which its scores have just read: these sums over the heads-last keys measured
// 4% slower there.
template <bool Shifted, typename V, typename A>
__attribute__((flatten)) inline void tile_row_sums(A* y, int64_t y_stride, const V& factor, int64_t dim,
                                                   const A* w, const A* x, const int64_t* row, int64_t x_dim,
                                                   int64_t n_rows, int64_t cols, int64_t x_step,
                                                   const simd::MaskOf<V>& key_index) {
  constexpr int L = simd::kLanes<V>, Q = std::min(L, simd::kWideBytes == 64 ? 8 : 4);
  using Wide = simd::Wide<A>;
  using Narrow = simd::Vec<A>;
  using Quarter = simd::VecN<A, 16>;
  // queries [t0, t0 + Q), dims [d0, d0 + P W) as P vectors of type X (W lanes)
  const auto block = [&](int t0, int64_t d0, auto pieces, auto vector) {
    constexpr int P = decltype(pieces)::value;
    using X = decltype(vector);
    constexpr int W = simd::kLanes<X>;
    X acc[Q][P];
    for (int t = 0; t < Q; ++t)
      for (int i = 0; i < P; ++i) acc[t][i] = X{};
    for (int64_t r = 0; r < n_rows; ++r) {
      const A* xr = x + row[r] * x_dim + d0;
      const A* wr = w + r * cols * L + t0;
      if constexpr (Shifted) {
        in_blocks(cols, [&](int64_t c0, auto c_) {
          constexpr int C = decltype(c_)::value;
          const A* x0 = xr + (t0 + c0) * x_step;
          const A* w0 = wr + c0 * L;
          simd::unrolled<Q + C - 1>([&](auto m) {
            X xs[P];
            for (int i = 0; i < P; ++i) xs[i] = simd::load<X>(x0 + m * x_step + i * W);
            simd::unrolled<Q>([&](auto t) {
              constexpr int c = decltype(m)::value - decltype(t)::value;
              if constexpr (c >= 0 && c < C) {
                const X p = simd::splat<X>(w0[c * L + t]);
                for (int i = 0; i < P; ++i) acc[t][i] += p * xs[i];
              }
            });
          });
        });
      } else {
        for (int64_t c = 0; c < cols; ++c)
          for (int t = 0; t < Q; ++t) {
            const A* xk = xr + (key_index[t0 + t] + c) * x_step;
            const X p = simd::splat<X>(wr[c * L + t]);
            for (int i = 0; i < P; ++i) acc[t][i] += p * simd::load<X>(xk + i * W);
          }
      }
    }
    for (int t = 0; t < Q; ++t)
      for (int i = 0; i < P; ++i) {
        simd::store(y + (t0 + t) * y_stride + d0 + i * W, acc[t][i] * simd::splat<X>(factor[t0 + t]));
      }
  };
  constexpr int W = simd::kLanes<Wide>, N = simd::kLanes<Narrow>, M = simd::kLanes<Quarter>;
  for (int t0 = 0; t0 < L; t0 += Q) {
    int64_t d0 = 0;
    for (; d0 + 2 * W <= dim; d0 += 2 * W) block(t0, d0, std::integral_constant<int, 2>{}, Wide{});
    if (d0 + W <= dim) block(t0, d0, std::integral_constant<int, 1>{}, Wide{}), d0 += W;
    if (W > N && d0 + N <= dim) block(t0, d0, std::integral_constant<int, 1>{}, Narrow{}), d0 += N;
    if (d0 + M <= dim) block(t0, d0, std::integral_constant<int, 1>{}, Quarter{}), d0 += M;
    for (int t = t0; t < t0 + Q; ++t) {
      const int64_t key = Shifted ? t : key_index[t];
      for (int64_t d = d0; d < dim; ++d) {
        A sum = 0;
        for (int64_t r = 0; r < n_rows; ++r)
          for (int64_t c = 0; c < cols; ++c)
            sum += w[(r * cols + c) * L + t] * x[row[r] * x_dim + (key + c) * x_step + d];
        y[t * y_stride + d] = factor[t] * sum;
      }
    }
  }
}

// dst[j * dst_stride + i] = src[i * src_stride + j] for i < rows and j < cols, converted to T:
// W x W blocks through register transposes where both are A, the ragged edges (and any
// conversion) one value at a time.
template <typename A, typename S, typename T>
inline void transpose_rows(const S* src, int64_t src_stride, T* dst, int64_t dst_stride, int64_t rows,
                           int64_t cols) {
  constexpr int W = simd::kWidth<A>;
  int64_t whole_rows = 0, whole_cols = 0;
  if constexpr (std::is_same_v<S, A> && std::is_same_v<T, A>) {
    whole_rows = rows - rows % W, whole_cols = cols - cols % W;
    for (int64_t j0 = 0; j0 < whole_cols; j0 += W)
      for (int64_t i0 = 0; i0 < whole_rows; i0 += W) {
        simd::Vec<A> r[W];
        for (int i = 0; i < W; ++i) r[i] = simd::load(src + (i0 + i) * src_stride + j0);
        simd::transpose(r);
        for (int j = 0; j < W; ++j) simd::store(dst + (j0 + j) * dst_stride + i0, r[j]);
      }
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = i < whole_rows ? whole_cols : 0; j < cols; ++j)
      dst[j * dst_stride + i] = static_cast<T>(src[i * src_stride + j]);
}

// dst[j * L + t] = src[t * src_stride + j] for t < L and j < dim: L rows as the lanes of dim
// vectors. Where L is twice the register transposes' width, each vector is stored whole, joined
// from its two transposed halves: the tile loops read these vectors at once, and a 64-byte load
// of two 32-byte stores still in flight would stall on store-to-load forwarding.
template <typename V, typename A>
inline void transpose_to_lanes(const A* src, int64_t src_stride, A* dst, int64_t dim) {
  constexpr int L = simd::kLanes<V>, W = simd::kWidth<A>;
  if constexpr (L == 2 * W) {
    int64_t j0 = 0;
    for (; j0 + W <= dim; j0 += W) {
      simd::Vec<A> lo[W], hi[W];
      for (int i = 0; i < W; ++i)
        lo[i] = simd::load(src + i * src_stride + j0), hi[i] = simd::load(src + (W + i) * src_stride + j0);
      simd::transpose(lo);
      simd::transpose(hi);
      for (int j = 0; j < W; ++j) simd::store(dst + (j0 + j) * L, simd::join(lo[j], hi[j]));
    }
    for (int64_t j = j0; j < dim; ++j)
      for (int t = 0; t < L; ++t) dst[j * L + t] = src[t * src_stride + j];
  } else {
    transpose_rows<A>(src, src_stride, dst, L, L, dim);
  }
}

// Where a tile's queries are: one dilation group's consecutive members, so heads-last rows `step`
// tokens apart from row0 (the first's); where each window row's keys start in the head's packed
// keys (the scratch's row_keys) and the heads-last row of its key at the tile's base (row_head:
// the row's key m is m dilation steps further, its window lying in one dilation group); and the
// queries transposed into its qt [dim][L].
struct TilePlace {
  int64_t token0, step, row0;
};

template <int R, typename A, typename V>
TilePlace tile_place(const Geometry<R>& g, const Shape& s, const LineRows<R>& rows, const LineTiles& tiles,
                     const TileWindow<V>& tw, int64_t b, int64_t h, int64_t line, int64_t p0, const A* q,
                     const A* keys, TileScratch<A>& sc) {
  constexpr int L = simd::kLanes<V>;
  const int64_t length = g.axes[R - 1].length, step = g.axes[R - 1].dilation;
  for (size_t r = 0; r < rows.line.size(); ++r) {
    sc.row_keys[r] = keys + rows.line[r] * s.dim * length + tw.base;
    sc.row_head[r] = (b * g.tokens + rows.token[r] + tiles.coordinate[tw.base]) * s.heads + h;
  }
  const int64_t token0 = line * length + tiles.coordinate[p0], row0 = (b * g.tokens + token0) * s.heads + h;
  // The next tile's query rows, asked for ahead: a head's rows lie a token's heads apart, a stride
  // the hardware's prefetch does not follow from one tile to the next (the forward measured 4%
  // faster in one process, four heads, K = 7).
  prefetch_rows(q, row0 + L * step * s.heads, step * s.heads, L, s.dim, false);
  transpose_to_lanes<V>(q + row0 * s.dim, step * s.heads * s.dim, sc.qt.data(), s.dim);
  return {token0, step, row0};
}

// score[j] = scale * (the tile's queries . keys (r, c0 + j)) + their bias, for j < G; row_key and
// row_bias at the window row's (r) start, row_bias null without a bias.
template <int G, bool Shifted, typename V, typename A>
inline void tile_scores(const A* qt, int64_t dim, const A* row_key, int64_t stride, const A* row_bias,
                        const TileWindow<V>& tw, int64_t c0, A scale, V* score) {
  tile_dots<G, Shifted, V>(qt, dim, row_key + c0, stride, tw.key_index, score);
  for (int j = 0; j < G; ++j) {
    score[j] *= simd::splat<V>(scale);
    if (row_bias)
      score[j] += Shifted ? simd::splat<V>(row_bias[c0 + j])
                          : simd::permute(simd::load<V>(row_bias + c0 + j), tw.bias_index);
  }
}

// The forward of the tile at the line's packed positions [p0, p0 + L): scores, softmax and
// weighted values as above; writes the L outputs and their log-sum-exp. keys: the head's packed
// keys; v: the heads-last values, whose rows the weighted sum reads in place (tile_row_sums).
template <int R, bool Shifted, typename A, typename V>
void tile_forward(const Geometry<R>& g, const Shape& s, const LineRows<R>& rows, const LineTiles& tiles,
                  const TileWindow<V>& tw, int64_t b, int64_t h, int64_t line, int64_t p0, const A* q,
                  const A* keys, const A* values, const A* bias, A* out, A* lse, A scale, TileScratch<A>& sc) {
  constexpr int L = simd::kLanes<V>;
  const Axis& last = g.axes[R - 1];
  const int64_t H = s.heads, D = s.dim, Dv = s.dim_v, length = last.length, n_tokens = g.tokens;
  const int64_t cols = tw.count, n_rows = static_cast<int64_t>(rows.token.size());
  const auto [token0, step, row0] = tile_place(g, s, rows, tiles, tw, b, h, line, p0, q, keys, sc);
  // The output rows, asked for (to write) while the scores run: the weighted sum ends by storing
  // them, and rows not in cache would stall those stores (the forward 1-2.5% faster).
  prefetch_rows(out, row0, step * H, L, Dv, true);
  V top = simd::splat<V>(-std::numeric_limits<A>::infinity());
  for (int64_t r = 0; r < n_rows; ++r) {
    const A* row_bias = bias ? bias + rows.bias[r] + tw.bias_base : nullptr;
    in_blocks(cols, [&](int64_t c0, auto g_) {
      constexpr int G = decltype(g_)::value;
      V score[G];
      tile_scores<G, Shifted>(sc.qt.data(), D, sc.row_keys[r], length, row_bias, tw, c0, scale, score);
      for (int j = 0; j < G; ++j) {
        top = score[j] > top ? score[j] : top;
        simd::store(sc.s.data() + ((r * cols) + c0 + j) * L, score[j]);
      }
    });
  }
  V total{};
  for (int64_t k = 0; k < n_rows * cols; ++k) {
    const V p = simd::exp(simd::load<V>(sc.s.data() + k * L) - top);
    total += p;
    simd::store(sc.s.data() + k * L, p);
  }
  tile_row_sums<Shifted>(out + row0 * Dv, step * H * Dv, simd::splat<V>(A(1)) / total, Dv, sc.s.data(), values,
                        sc.row_head.data(), Dv, n_rows, cols, last.dilation * H * Dv, tw.key_index);
  for (int t = 0; t < L; ++t) lse[(b * H + h) * n_tokens + token0 + t * step] = top[t] + std::log(total[t]);
}

// y[m][0:dim] += sum_t e[m * L + t] * x[t * x_stride][0:dim] for m < rows (null rows skipped; e
// and x as in tile_backward): the tile's key-side products as small GEMMs over its L queries,
// kMRows key rows at a time so that each x row loaded serves several of them; lanes[block] are
// the queries [first, last) whose windows reach that block's key rows (e is zero elsewhere).
constexpr int kMRows = 4;
template <int L, typename A>
inline void tile_rows_add(A* const* y, int64_t rows, const A* e, const std::pair<int, int>* lanes, const A* x,
                          int64_t x_stride, int64_t dim) {
  using V = simd::Wide<A>;
  constexpr int W = simd::kLanes<V>;
  // Columns [d0, d0 + P * W) of kMRows rows: P vectors a row in registers.
  const auto columns = [&](int64_t m0, int mb, int t_first, int t_last, int64_t d0, auto pieces) {
    constexpr int P = decltype(pieces)::value;
    V acc[kMRows][P] = {};
    for (int t = t_first; t < t_last; ++t) {
      V xs[P];
      for (int j = 0; j < P; ++j) xs[j] = simd::load<V>(x + t * x_stride + d0 + j * W);
      for (int i = 0; i < kMRows; ++i) {
        const V w = simd::splat<V>(e[(m0 + i) * L + t]);
        for (int j = 0; j < P; ++j) acc[i][j] += w * xs[j];
      }
    }
    for (int i = 0; i < mb; ++i) {
      if (!y[m0 + i]) continue;
      for (int j = 0; j < P; ++j) {
        A* out = y[m0 + i] + d0 + j * W;
        simd::store(out, simd::load<V>(out) + acc[i][j]);
      }
    }
  };
  for (int64_t m0 = 0; m0 < rows; m0 += kMRows) {
    const int mb = static_cast<int>(std::min<int64_t>(kMRows, rows - m0));
    const auto [t_first, t_last] = lanes[m0 / kMRows];
    int64_t d0 = 0;
    for (; d0 + 2 * W <= dim; d0 += 2 * W) columns(m0, mb, t_first, t_last, d0, std::integral_constant<int, 2>{});
    if (d0 + W <= dim) columns(m0, mb, t_first, t_last, d0, std::integral_constant<int, 1>{}), d0 += W;
    for (; d0 < dim; ++d0)
      for (int i = 0; i < mb; ++i) {
        if (!y[m0 + i]) continue;
        A sum = 0;
        for (int t = t_first; t < t_last; ++t) sum += e[(m0 + i) * L + t] * x[t * x_stride + d0];
        y[m0 + i][d0] += sum;
      }
  }
}

// The key-side products of a shifted run of a tile's lanes in one window row (lane t's key c
// is key t + c + offset of the row's span): y[t + c + offset][0:dim] += factor e[c * L + t]
// x[t * x_stride][0:dim] for lanes t in [first, last) and c < C, e the row's [C][L] score
// (gradient) vectors; where Run is false the run is the whole tile (last = L, offset 0, checked
// at compile time). Every product is a useful one (the E-matrix GEMMs of tile_rows_add compute
// about twice as many at K = 7, after filling E). The span's accumulators stay in registers for
// one W-wide piece of the dims while the queries' rows pass, each multiplied by its C scores
// (broadcast); t and c are unrolled, so that each accumulator's index is known at compile time.
// null rows of y are skipped. Measured against the E-matrix GEMMs in one process (one thread,
// D = 32): the backward 2-3% faster at 56x56, K = 7 and 11% at 112x112 for the shifted tiles;
// for the border tiles' runs (their clamped lanes by tile_shared_add) 1.5-2.7% more.
template <int L, int C, bool Run, typename A>
__attribute__((flatten)) inline void tile_band_add(A* const* y, int first, int run_last, int run_offset, const A* e,
                                                   const A* x, int64_t x_stride, int64_t dim, A factor) {
  using V = simd::Wide<A>;
  constexpr int W = simd::kLanes<V>, M = L + C - 1;
  const int last = Run ? run_last : L, offset = Run ? run_offset : 0;
  int64_t d0 = 0;
  for (; d0 + W <= dim; d0 += W) {
    V acc[M];  // zeroed unrolled: GCC turns a loop that zeroes it into a memset, which keeps it in memory
    simd::unrolled<M>([&](auto m) { acc[m] = V{}; });
    simd::unrolled<L>([&](auto t) {
      if (t < first || t >= last) return;
      const V xs = simd::load<V>(x + t * x_stride + d0);
      simd::unrolled<C>([&](auto c) { acc[t + c] += simd::splat<V>(e[c * L + t]) * xs; });
    });
    simd::unrolled<M>([&](auto m) {
      A* row = m >= first && m < last + C - 1 ? y[m + offset] : nullptr;
      if (row) simd::store(row + d0, simd::load<V>(row + d0) + acc[m] * simd::splat<V>(factor));
    });
  }
  for (; d0 < dim; ++d0)
    for (int t = first; t < last; ++t)
      for (int c = 0; c < C; ++c)
        if (A* row = y[t + c + offset]) row[d0] += factor * e[c * L + t] * x[t * x_stride + d0];
}

// y[c][0:dim] += factor e[c * L + t] x[t * x_stride][0:dim] for lanes t in [first, last) and
// c < C: lanes clamped to one window (at a border tile's ends) share its C key rows, whose
// accumulators stay in registers while those lanes' rows pass. null rows of y are skipped.
template <int L, int C, typename A>
inline void tile_shared_add(A* const* y, int first, int last, const A* e, const A* x, int64_t x_stride, int64_t dim,
                            A factor) {
  using V = simd::Wide<A>;
  constexpr int W = simd::kLanes<V>;
  if (first >= last) return;
  int64_t d0 = 0;
  for (; d0 + W <= dim; d0 += W) {
    V acc[C];
    for (int c = 0; c < C; ++c) acc[c] = V{};
    for (int t = first; t < last; ++t) {
      const V xs = simd::load<V>(x + t * x_stride + d0);
      for (int c = 0; c < C; ++c) acc[c] += simd::splat<V>(e[c * L + t]) * xs;
    }
    for (int c = 0; c < C; ++c)
      if (A* row = y[c]) simd::store(row + d0, simd::load<V>(row + d0) + acc[c] * simd::splat<V>(factor));
  }
  for (; d0 < dim; ++d0)
    for (int t = first; t < last; ++t)
      for (int c = 0; c < C; ++c)
        if (A* row = y[c]) row[d0] += factor * e[c * L + t] * x[t * x_stride + d0];
}

// Scratch of one thread's backward tiles: besides the forward's, where each window row starts
// in the head's packed values, dO transposed, the window's score gradients [keys][L], the
// key-side matrices [key span][L] of one window row, the output, then dQ, transposed [dim][L],
// and the bias gradient of one (batch, head) by lanes [bias_size][L] (flush_bias_lanes sums
// them).
template <typename A>
struct TileBackwardScratch : TileScratch<A> {
  std::vector<A> dot, ds, ep, eds, ot, bias_lanes;
  std::vector<const A*> row_values;
  std::vector<A*> dk_rows, dv_rows;
  std::vector<std::pair<int, int>> lanes;
  TileBackwardScratch(int64_t dim, int64_t dim_v, int64_t window_keys, int64_t cols, int64_t bias_size, int lanes_)
      : TileScratch<A>(dim, dim_v, window_keys, lanes_), dot(dim_v * lanes_), ds(window_keys * lanes_),
        ep((cols + lanes_ + kMRows) * lanes_), eds((cols + lanes_ + kMRows) * lanes_),
        ot(std::max(dim, dim_v) * lanes_), bias_lanes(bias_size * lanes_), row_values(window_keys),
        dk_rows(cols + lanes_ + kMRows), dv_rows(cols + lanes_ + kMRows), lanes(cols + lanes_ + kMRows) {}

  // drpb[i] += the sum of bias_lanes' row i, which is zeroed for the next (batch, head).
  template <typename V>
  void flush_bias_lanes(A* drpb) {
    constexpr int L = simd::kLanes<V>;
    for (size_t i = 0; i < bias_lanes.size() / L; ++i) {
      drpb[i] += simd::sum_lanes(simd::load<V>(bias_lanes.data() + i * L));
      simd::store(bias_lanes.data() + i * L, V{});
    }
  }
};

// The backward of the tile at the line's packed positions [p0, p0 + L), whose lanes below `skip`
// were done by the tile before (their dq is written again, their key-side and bias gradients are
// not added twice). Per window key (r, c): P from the saved log-sum-exp, dP = dO . V, dS =
// P (dP - delta), all lanes at once; dQ = sum dS K as the forward's weighted sum; the bias
// gradient per key; and dK, dV per window row r as GEMMs: the row's keys span
// max(key_index) + cols packed positions, E[m][t] = dS (or P) of lane t's key m (zero where m is
// outside lane t's window), dK[m] += scale sum_t E[m][t] q_t and dV[m] += sum_t P[m][t] dO_t,
// written straight to the heads-last rows the thread owns; in a tile at query stride 1 of up to
// kBlock columns the same sums go without E, product by product (tile_band_add, tile_shared_add).
template <int R, bool Shifted, typename A, typename V>
void tile_backward(const Geometry<R>& g, const Shape& s, const LineRows<R>& rows, const LineTiles& tiles,
                   const TileWindow<V>& tw, int64_t b, int64_t h, int64_t line, int64_t p0, int skip,
                   const A* q, const A* keys, const A* values, const A* bias, const A* out, const A* dout,
                   const A* lse, A* dq, A* dk, A* dv, A* drpb, A scale, TileBackwardScratch<A>& sc) {
  constexpr int L = simd::kLanes<V>, kTableLanes = simd::kLanes<TileVec<A>>;
  const Axis& last = g.axes[R - 1];
  const int64_t H = s.heads, D = s.dim, Dv = s.dim_v, length = last.length, n_tokens = g.tokens;
  const int64_t cols = tw.count, n_rows = static_cast<int64_t>(rows.token.size());
  const auto [token0, step, row0] = tile_place(g, s, rows, tiles, tw, b, h, line, p0, q, keys, sc);
  for (int64_t r = 0; r < n_rows; ++r) sc.row_values[r] = values + rows.line[r] * Dv * length + tw.base;
  // the next tile's dO and O rows, asked for ahead as tile_place does its query rows (the
  // backward 0-3.5% faster at 56x56, K = 7, 5.6% at 112x112)
  prefetch_rows(dout, row0 + L * step * H, step * H, L, Dv, false);
  prefetch_rows(out, row0 + L * step * H, step * H, L, Dv, false);
  transpose_to_lanes<V>(dout + row0 * Dv, step * H * Dv, sc.dot.data(), Dv);
  transpose_to_lanes<V>(out + row0 * Dv, step * H * Dv, sc.ot.data(), Dv);
  V delta{}, top;
  for (int64_t d = 0; d < Dv; ++d) delta += simd::load<V>(sc.dot.data() + d * L) * simd::load<V>(sc.ot.data() + d * L);
  for (int t = 0; t < L; ++t) top[t] = lse[(b * H + h) * n_tokens + token0 + t * step];
  simd::MaskOf<V> lane;
  for (int t = 0; t < L; ++t) lane[t] = t;
  using I = typename simd::LanesOf<V>::I;
  const auto live = lane >= static_cast<I>(skip);
  const auto in_run = lane >= static_cast<I>(tw.run_first) && lane < static_cast<I>(tw.run_last);
  for (int64_t r = 0; r < n_rows; ++r) {
    const A* row_bias = bias ? bias + rows.bias[r] + tw.bias_base : nullptr;
    A* row_drpb = drpb ? drpb + rows.bias[r] + tw.bias_base : nullptr;
    A* bias_lanes = drpb ? sc.bias_lanes.data() + (rows.bias[r] + tw.bias_base) * kTableLanes : nullptr;
    in_blocks(cols, [&](int64_t c0, auto g_) {
      constexpr int G = decltype(g_)::value;
      V score[G], dprob[G];
      tile_scores<G, Shifted>(sc.qt.data(), D, sc.row_keys[r], length, row_bias, tw, c0, scale, score);
      tile_dots<G, Shifted, V>(sc.dot.data(), Dv, sc.row_values[r] + c0, length, tw.key_index, dprob);
      for (int j = 0; j < G; ++j) {
        const V p = simd::exp(score[j] - top);
        const V ds = p * (dprob[j] - delta);
        simd::store(sc.s.data() + (r * cols + c0 + j) * L, p);
        simd::store(sc.ds.data() + (r * cols + c0 + j) * L, ds);
        if (row_drpb) {
          // lanes that share a bias index add by vector to its row of bias_lanes; the others
          // one by one (clamped lanes, permuted tiles)
          const V counted = live ? ds : V{};
          if (Shifted || tw.runs) {
            const auto shared = Shifted ? live : live && in_run;
            A* cell = bias_lanes + (c0 + j + (Shifted ? 0 : tw.bias_index[tw.run_first])) * kTableLanes;
            simd::store(cell, simd::load<V>(cell) + (shared ? ds : V{}));
          }
          if (!Shifted)
            for (int t = 0; t < L; ++t)
              if (!tw.runs || t < tw.run_first || t >= tw.run_last) row_drpb[c0 + j + tw.bias_index[t]] += counted[t];
        }
      }
    });
  }
  tile_sums<Shifted, V>(sc.ot.data(), D, sc.ds.data(), sc.row_keys.data(), n_rows, cols, length, tw.key_index);
  for (int64_t d = 0; d < D; ++d) simd::store(sc.ot.data() + d * L, simd::load<V>(sc.ot.data() + d * L) * scale);
  transpose_rows<A>(sc.ot.data(), L, dq + row0 * D, step * H * D, D, L);
  // Key side, one window row at a time: product by product where the lanes are a shifted run
  // and clamped ends (every tile at stride 1) of up to kBlock columns, else by the E GEMMs.
  const bool band = tw.runs && cols <= kBlock;
  int64_t span = 0;
  for (int t = 0; t < L; ++t) span = std::max<int64_t>(span, tw.key_index[t] + cols);
  const int64_t padded_span = (span + kMRows - 1) / kMRows * kMRows;
  for (int64_t m0 = 0; !band && m0 < padded_span; m0 += kMRows) {  // the live lanes whose windows reach [m0, +kMRows)
    int first = L, last_ = skip;
    for (int t = skip; t < L; ++t)
      if (tw.key_index[t] <= m0 + kMRows - 1 && tw.key_index[t] + cols > m0) first = std::min(first, t), last_ = t + 1;
    sc.lanes[m0 / kMRows] = {std::min(first, last_), last_};
  }
  for (int64_t r = 0; r < n_rows; ++r) {
    for (int64_t m = 0; m < padded_span; ++m) {
      const bool key = m < span;
      const int64_t head_row = sc.row_head[r] + m * last.dilation * H;
      sc.dk_rows[m] = key ? dk + head_row * D : nullptr;
      sc.dv_rows[m] = key ? dv + head_row * Dv : nullptr;
    }
    if (band) {
      with_count(static_cast<int>(cols), [&](auto c_) {
        constexpr int C = decltype(c_)::value;
        // the run's lanes by bands, the clamped lanes before and after it on their shared keys
        // (a shifted tile is one run: its band bounds are compile-time, its clamped lanes none)
        const auto key_side = [&](A* const* y, const A* e, const A* x, int64_t x_dim, A factor) {
          const int64_t x_stride = step * H * x_dim;
          tile_band_add<L, C, !Shifted>(y, std::max(skip, tw.run_first), tw.run_last, tw.run_offset, e, x, x_stride,
                                        x_dim, factor);
          tile_shared_add<L, C>(y + tw.key_index[0], skip, tw.run_first, e, x, x_stride, x_dim, factor);
          tile_shared_add<L, C>(y + tw.key_index[L - 1], std::max(skip, tw.run_last), L, e, x, x_stride, x_dim,
                                factor);
        };
        key_side(sc.dk_rows.data(), sc.ds.data() + r * cols * L, q + row0 * D, D, scale);
        key_side(sc.dv_rows.data(), sc.s.data() + r * cols * L, dout + row0 * Dv, Dv, A(1));
      });
      continue;
    }
    std::fill(sc.ep.begin(), sc.ep.begin() + padded_span * L, A(0));
    std::fill(sc.eds.begin(), sc.eds.begin() + padded_span * L, A(0));
    for (int64_t c = 0; c < cols; ++c)
      for (int t = skip; t < L; ++t) {
        const int64_t m = tw.key_index[t] + c;
        sc.ep[m * L + t] = sc.s[(r * cols + c) * L + t];
        sc.eds[m * L + t] = scale * sc.ds[(r * cols + c) * L + t];
      }
    tile_rows_add<L>(sc.dk_rows.data(), padded_span, sc.eds.data(), sc.lanes.data(), q + row0 * D, step * H * D, D);
    tile_rows_add<L>(sc.dv_rows.data(), padded_span, sc.ep.data(), sc.lanes.data(), dout + row0 * Dv,
                     step * H * Dv, Dv);
  }
}

// Fused forward. q, k, v are heads-last in the accumulation type A; rpb is the bias table
// [H, bias_size + kBiasPad] in A (zero tail); out is written in A (the host converts it: a kernel
// per element type would double the tiles' instantiations and the build); lse [B, H, N] is kept
// for backward.
// KB: the key vectors' width in bytes (with_key_width). packed_keys: packed_size(s, N, D)
// elements (the values are read where they are). Regular tiles of L queries go through
// tile_forward, the other queries one by one.
template <int R, typename A, int KB>
void fused_forward(const Geometry<R>& g, const Shape& s, const A* q, const A* k, const A* v,
                   const A* rpb, A* out, A* lse, A scale, A* packed_keys) {
  constexpr int L = simd::kLanes<TileVec<A>>;
  using Vec = simd::VecN<A, KB>;
  constexpr int W = simd::kLanes<Vec>;
  const int64_t n_tokens = g.tokens, H = s.heads, D = s.dim, Dv = s.dim_v;
  const Axis& last = g.axes[R - 1];
  const int64_t length = last.length, lines = n_tokens / length;
  const int64_t chunks = (length + kLineChunk - 1) / kLineChunk;
  const int64_t rpb_row = g.bias_size + kBiasPad;
  static_assert(kBiasPad >= W, "bias rows need a full vector of tail");
  const auto position = line_positions(last);
  const LineTiles tiles(last, position, L, kHalfTiles ? L / 2 : 0);
  pack(g, s, k, D, position, packed_keys);
#pragma omp parallel
  {
    Scratch<A> sc(D, Dv);
    TileScratch<A> tile_scratch(D, Dv, g.window_keys, L);
    LineRows<R> rows;
    int64_t built = -1;
    // Heads innermost: they share the line's window rows and read neighbouring memory.
#pragma omp for schedule(static)
    for (int64_t work = 0; work < s.batch * lines * chunks * H; ++work) {
      const int64_t b = work / (lines * chunks * H), line = (work / (chunks * H)) % lines;
      const int64_t x0 = (work / H) % chunks * kLineChunk, h = work % H;
      if (line != built) rows.build(g, line), built = line;
      const int64_t n_rows = static_cast<int64_t>(rows.token.size());
      const A* keys = packed_keys + (b * H + h) * D * n_tokens;
      const A* values = v + (b * n_tokens * H + h) * Dv;
      const A* bias = rpb ? rpb + h * rpb_row : nullptr;
      const int64_t end = std::min(length, x0 + kLineChunk);
      // p: a packed position of the line, its query at x
      for (int64_t p = x0; p < end; ++p) {
        const int64_t p0 = tiles.start[p];
        if (p0 >= x0 && p0 + tiles.width[p] <= end) {  // the tile that covers p (from p0 <= p: done again)
          with_tile<A>(tiles, p0, tiles.width[p], [&](const auto& tw, auto shifted) {
            tile_forward<R, shifted.value, A>(g, s, rows, tiles, tw, b, h, line, p0, q, keys, v, bias, out, lse,
                                              scale, tile_scratch);
          });
          p = p0 + tiles.width[p] - 1;
          continue;
        }
        const int64_t x = tiles.coordinate[p];
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
          const Block<A, R, W> blk(qw, j0, rows, last.dilation, keys, D * length, nullptr, 0);
          with_count(blk.count, [&](auto count) {
            constexpr int G = decltype(count)::value;
            Vec score[G];
            dots<G, Vec>(sc.x.data(), D, blk.keys.data(), length, score);
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
        const A inverse = A(1) / total;
        for (int64_t d = 0; d < Dv; ++d) out[row * Dv + d] = sc.acc[d] * inverse;
        lse[(b * H + h) * n_tokens + n] = top + std::log(total);
      }
    }
  }
}

// Fused backward from the saved log-sum-exp: per query, P and dP = dO . V over its window by
// the forward's vector blocks, dS = P (dP - delta), then dQ gathered from the keys and dK, dV
// scattered to them. Work is split by (batch, head), so a thread owns the dk, dv and bias
// gradient it writes. All inputs heads-last in A; dq is written in A, dk, dv accumulate in A (the
// host converts them); drpb is [B, H, bias_size].
// packed_keys, packed_values: packed_size(s, N, D) and packed_size(s, N, Dv) elements.
template <int R, typename A, int KB>
void fused_backward(const Geometry<R>& g, const Shape& s, const A* q, const A* k, const A* v,
                    const A* rpb, const A* out, const A* dout, const A* lse, A* dq, A* dk, A* dv,
                    A* drpb, A scale, A* packed_keys, A* packed_values) {
  using Vec = simd::VecN<A, KB>;
  constexpr int W = simd::kLanes<Vec>;
  const int64_t n_tokens = g.tokens, H = s.heads, D = s.dim, Dv = s.dim_v;
  const Axis& last = g.axes[R - 1];
  const int64_t length = last.length, lines = n_tokens / length;
  const int64_t rpb_row = g.bias_size + kBiasPad;
  static_assert(kBiasPad >= W, "bias rows need a full vector of tail");
  constexpr int L = simd::kLanes<TileVec<A>>;
  const auto position = line_positions(last);
  const LineTiles tiles(last, position, L, kHalfTiles ? L / 2 : 0);
  pack(g, s, k, D, position, packed_keys);
  pack(g, s, v, Dv, position, packed_values);
#pragma omp parallel
  {
    Scratch<A> sc(D, Dv);
    TileBackwardScratch<A> tile_scratch(D, Dv, g.window_keys, last.kernel, drpb ? g.bias_size : 0, L);
    LineRows<R> rows;
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < s.batch * H; ++bh) {
      const int64_t b = bh / H, h = bh % H, head = b * n_tokens * H + h;
      const A* keys = packed_keys + bh * D * n_tokens;
      const A* values = packed_values + bh * Dv * n_tokens;
      const A* bias = rpb ? rpb + h * rpb_row : nullptr;
      for (int64_t line = 0; line < lines; ++line) {
        rows.build(g, line);
        const int64_t n_rows = static_cast<int64_t>(rows.token.size());
        for (int64_t p = 0; p < length; ++p) {
          const int64_t p0 = tiles.start[p];
          if (p0 >= 0) {  // the tile that covers p (from p0 <= p: its lanes before p are done)
            const int skip = static_cast<int>(p - p0);
            A* drpb_head = drpb ? drpb + bh * g.bias_size : nullptr;
            with_tile<A>(tiles, p0, tiles.width[p], [&](const auto& tw, auto shifted) {
              tile_backward<R, shifted.value, A>(g, s, rows, tiles, tw, b, h, line, p0, skip, q, keys, values,
                                                 bias, out, dout, lse, dq, dk, dv, drpb_head, scale, tile_scratch);
            });
            p = p0 + tiles.width[p] - 1;
            continue;
          }
          const int64_t x = tiles.coordinate[p];
          const int64_t n = line * length + x, row = (b * n_tokens + n) * H + h;
          const QueryWindow qw = query_window<W>(last, position, x, n_rows);
          A delta = 0;
          for (int64_t d = 0; d < Dv; ++d) delta += dout[row * Dv + d] * out[row * Dv + d];
          for (int64_t d = 0; d < D; ++d) sc.x[d] = scale * q[row * D + d];
          std::fill(sc.acc.begin(), sc.acc.begin() + D, A(0));
          const A top = lse[bh * n_tokens + n];
          const A* dout_row = dout + row * Dv;
          for (int64_t j0 = 0; j0 < qw.vectors; j0 += kBlock) {
            const Block<A, R, W> blk(qw, j0, rows, last.dilation, keys, D * length, values, Dv * length);
            with_count(blk.count, [&](auto count) {
              constexpr int G = decltype(count)::value;
              Vec score[G], dprob[G];
              dots<G, Vec>(sc.x.data(), D, blk.keys.data(), length, score);
              dots<G, Vec>(dout_row, Dv, blk.values.data(), length, dprob);
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
          for (int64_t d = 0; d < D; ++d) dq[row * D + d] = scale * sc.acc[d];
        }
      }
      if (drpb) tile_scratch.template flush_bias_lanes<TileVec<A>>(drpb + bh * g.bias_size);
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
