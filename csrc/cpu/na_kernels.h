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
constexpr int64_t kLanes = 16;  // region keys per micro-kernel step: one 512-bit vector of floats

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

// A segment's region and each query's window inside it (shared by forward and backward).
template <int R>
struct SegmentRegion {
  std::vector<int64_t> keys, bias, tokens;  // the first query's neighbors; the region's tokens
  std::array<AxisWindow, kSegment> lasts;
  int64_t low = 0, width = 0, rows = 0;

  explicit SegmentRegion(int64_t window_keys) : keys(window_keys), bias(window_keys) {}

  void build(const Geometry<R>& g, const Segment& seg) {
    const Axis& last = g.axes[R - 1];
    const int64_t coordinate = seg.first_query % last.length;
    int64_t high = 0;
    for (int64_t i = 0; i < seg.count; ++i) {
      lasts[i] = axis_window(last, coordinate + i * seg.step);
      const int64_t end = lasts[i].first + (lasts[i].count - 1) * last.dilation;
      low = i == 0 ? lasts[i].first : std::min(low, lasts[i].first);
      high = i == 0 ? end : std::max(high, end);
    }
    width = (high - low) / last.dilation + 1;
    rows = g.neighbors(seg.first_query, keys.data(), bias.data()) / lasts[0].count;
    tokens.resize(rows * width);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row_start = keys[r * lasts[0].count] - lasts[0].first;
      for (int64_t c = 0; c < width; ++c) tokens[r * width + c] = row_start + low + c * last.dilation;
    }
  }

  int64_t size() const { return rows * width; }
  // Row stride of per-region buffers: a multiple of kLanes, so micro-kernels need no tail.
  int64_t padded() const { return (size() + kLanes - 1) / kLanes * kLanes; }
  // Column of query i's first window key inside each region row.
  int64_t offset(int64_t i, int64_t dilation) const { return (lasts[i].first - low) / dilation; }
};

// dst[d * padded + j] = src_head[d * n_tokens + token_j]: a region of a transposed [D, N] head,
// zero past the region's end.
template <int R, typename A>
void gather_region(const SegmentRegion<R>& reg, const A* head, int64_t dim, int64_t n_tokens,
                   int64_t step, std::vector<A>& dst) {
  const int64_t size = reg.padded();
  dst.assign(dim * size, A(0));
  for (int64_t d = 0; d < dim; ++d) {
    for (int64_t r = 0; r < reg.rows; ++r) {
      const A* run = head + d * n_tokens + reg.tokens[r * reg.width];
      A* out = dst.data() + d * size + r * reg.width;
      if (step == 1) {
        std::copy(run, run + reg.width, out);
      } else {
        for (int64_t c = 0; c < reg.width; ++c) out[c] = run[c * step];
      }
    }
  }
}

// out[i * size + j] = factor * sum_d rows_i[d] * block[d * size + j] for the segment's queries
// (size: a multiple of kLanes). A register-blocked micro-kernel: kSegment x kLanes accumulators
// live in vector registers across the whole d loop; rows past `count` are computed as zeros.
template <typename A, typename T>
void rows_times_block(const T* first_row, int64_t row_stride, int64_t count, A factor,
                      const std::vector<A>& block, int64_t dim, int64_t size, std::vector<A>& out) {
  std::vector<A> rows(kSegment * dim, A(0));
  for (int64_t i = 0; i < count; ++i)
    for (int64_t d = 0; d < dim; ++d) rows[d * kSegment + i] = factor * static_cast<A>(first_row[i * row_stride + d]);
  out.resize(kSegment * size);
  for (int64_t j0 = 0; j0 < size; j0 += kLanes) {
    A acc[kSegment][kLanes] = {};
    for (int64_t d = 0; d < dim; ++d) {
      const A* column = block.data() + d * size + j0;
      const A* x = rows.data() + d * kSegment;
      for (int64_t i = 0; i < kSegment; ++i)
#pragma omp simd
        for (int64_t t = 0; t < kLanes; ++t) acc[i][t] += x[i] * column[t];
    }
    for (int64_t i = 0; i < kSegment; ++i)
      for (int64_t t = 0; t < kLanes; ++t) out[i * size + j0 + t] = acc[i][t];
  }
}

// Fused forward. `kt` is k transposed to [B, H, D, N] (one copy per call). Per segment: every
// query's scores against the whole region, as vectorized axpys over a local [D, region] block;
// then per query a softmax over its own window; then the weighted values, each value row read
// once for the whole segment. Nothing of size [N, Kn] is kept; the log-sum-exp is saved for
// backward.
template <int R, typename T, typename A>
void fused_forward(const Geometry<R>& g, const Shape& s, const T* q, const A* kt, const T* v,
                   const T* rpb, T* out, A* lse, A scale) {
  const int64_t n_tokens = g.tokens, H = s.heads, D = s.dim, Dv = s.dim_v;
  const Axis& last = g.axes[R - 1];
  const auto parts = segments(g);
  const int64_t n_parts = static_cast<int64_t>(parts.size());
#pragma omp parallel
  {
    SegmentRegion<R> reg(g.window_keys);
    std::vector<A> kloc, scores, probs, p(g.window_keys), acc;
    std::array<A, kSegment> totals;
#pragma omp for schedule(static)
    for (int64_t work = 0; work < s.batch * H * n_parts; ++work) {
      const int64_t b = work / (H * n_parts), h = (work / n_parts) % H;
      const Segment& seg = parts[work % n_parts];
      reg.build(g, seg);
      const int64_t rk = reg.padded(), row0 = (b * n_tokens + seg.first_query) * H + h;
      const int64_t row_stride = seg.step * H;
      gather_region(reg, kt + (b * H + h) * D * n_tokens, D, n_tokens, last.dilation, kloc);
      rows_times_block(q + row0 * D, row_stride * D, seg.count, scale, kloc, D, rk, scores);
      probs.assign(seg.count * rk, A(0));
      for (int64_t i = 0; i < seg.count; ++i) {
        const int64_t offset = reg.offset(i, last.dilation), cols = reg.lasts[i].count;
        const int64_t shift = reg.lasts[i].bias0 - reg.lasts[0].bias0;
        const A* si = scores.data() + i * rk;
        int64_t m = 0;
        for (int64_t r = 0; r < reg.rows; ++r)
          for (int64_t c = 0; c < cols; ++c, ++m) {
            p[m] = si[r * reg.width + offset + c];
            if (rpb) p[m] += static_cast<A>(rpb[h * g.bias_size + reg.bias[r * reg.lasts[0].count] + shift + c]);
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
        for (int64_t r = 0; r < reg.rows; ++r)
          for (int64_t c = 0; c < cols; ++c) pi[r * reg.width + offset + c] = p[m++];
        totals[i] = total;
        lse[(b * H + h) * n_tokens + seg.first_query + i * seg.step] = top + std::log(total);
      }
      // Weighted values: each region value row is read once for all queries of the segment.
      acc.assign(seg.count * Dv, A(0));
      for (int64_t j = 0; j < reg.size(); ++j) {
        const T* vj = v + ((b * n_tokens + reg.tokens[j]) * H + h) * Dv;
        for (int64_t i = 0; i < seg.count; ++i) axpy(acc.data() + i * Dv, probs[i * rk + j], vj, Dv);
      }
      for (int64_t i = 0; i < seg.count; ++i) {
        T* o = out + (row0 + i * row_stride) * Dv;
        const A inverse = A(1) / totals[i];
        for (int64_t d = 0; d < Dv; ++d) o[d] = static_cast<T>(acc[i * Dv + d] * inverse);
      }
    }
  }
}

// Fused backward: per segment, recomputes P from the saved log-sum-exp over the region, dP from
// dout and the region's values, then dS = P (dP - delta); dV, dK and dQ follow as axpys. Work is
// split by (batch, head), so one thread owns the dk, dv and bias gradient it writes.
// kt, vt: k and v transposed to [B, H, D, N]; dk, dv: accumulation buffers ([B, N, H, D]);
// drpb: [B, H, prod(2K-1)].
template <int R, typename T, typename A>
void fused_backward(const Geometry<R>& g, const Shape& s, const T* q, const A* kt, const A* vt,
                    const T* k, const T* rpb, const T* out, const T* dout, const A* lse, T* dq,
                    A* dk, A* dv, A* drpb, A scale) {
  const int64_t n_tokens = g.tokens, H = s.heads, D = s.dim, Dv = s.dim_v;
  const Axis& last = g.axes[R - 1];
  const auto parts = segments(g);
#pragma omp parallel
  {
    SegmentRegion<R> reg(g.window_keys);
    std::vector<A> kloc, vloc, probs, dprobs, dqs;
    std::array<A, kSegment> delta;
#pragma omp for schedule(dynamic, 1)
    for (int64_t bh = 0; bh < s.batch * H; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      for (const Segment& seg : parts) {
        reg.build(g, seg);
        const int64_t rk = reg.padded(), row0 = (b * n_tokens + seg.first_query) * H + h;
        const int64_t row_stride = seg.step * H;  // between the segment's queries, in rows
        gather_region(reg, kt + bh * D * n_tokens, D, n_tokens, last.dilation, kloc);
        gather_region(reg, vt + bh * Dv * n_tokens, Dv, n_tokens, last.dilation, vloc);
        rows_times_block(q + row0 * D, row_stride * D, seg.count, scale, kloc, D, rk, probs);
        rows_times_block(dout + row0 * Dv, row_stride * Dv, seg.count, A(1), vloc, Dv, rk, dprobs);
        for (int64_t i = 0; i < seg.count; ++i) {
          const int64_t n = seg.first_query + i * seg.step, row = row0 + i * row_stride;
          delta[i] = 0;
          for (int64_t d = 0; d < Dv; ++d)
            delta[i] += static_cast<A>(dout[row * Dv + d]) * static_cast<A>(out[row * Dv + d]);
          const A m = lse[bh * n_tokens + n];
          const int64_t offset = reg.offset(i, last.dilation), cols = reg.lasts[i].count;
          const int64_t shift = reg.lasts[i].bias0 - reg.lasts[0].bias0;
          A* pi = probs.data() + i * rk;
          A* dpi = dprobs.data() + i * rk;
          for (int64_t r = 0; r < reg.rows; ++r) {
            // Outside the window P is zero; inside, P and dS = P (dP - delta).
            const int64_t begin = r * reg.width + offset, end = begin + cols;
            for (int64_t j = r * reg.width; j < (r + 1) * reg.width; ++j) {
              if (j < begin || j >= end) {
                pi[j] = dpi[j] = 0;
                continue;
              }
              A x = pi[j];
              const int64_t bias_index = reg.bias[r * reg.lasts[0].count] + shift + (j - begin);
              if (rpb) x += static_cast<A>(rpb[h * g.bias_size + bias_index]);
              pi[j] = std::exp(x - m);
              dpi[j] = pi[j] * (dpi[j] - delta[i]);
              if (drpb) drpb[bh * g.bias_size + bias_index] += dpi[j];
            }
          }
        }
        // dV_j += sum_i P_ij dO_i and dK_j += scale sum_i dS_ij q_i with the queries outside, so
        // that consecutive updates go to different keys; dQ_i = scale sum_j dS_ij k_j with the
        // keys outside, so that they go to different queries.
        for (int64_t i = 0; i < seg.count; ++i) {
          const int64_t row = row0 + i * row_stride;
          const int64_t offset = reg.offset(i, last.dilation), cols = reg.lasts[i].count;
          for (int64_t r = 0; r < reg.rows; ++r) {
            for (int64_t j = r * reg.width + offset; j < r * reg.width + offset + cols; ++j) {
              const int64_t key = (b * n_tokens + reg.tokens[j]) * H + h;
              axpy(dv + key * Dv, probs[i * rk + j], dout + row * Dv, Dv);
              axpy(dk + key * D, scale * dprobs[i * rk + j], q + row * D, D);
            }
          }
        }
        dqs.assign(seg.count * D, A(0));
        for (int64_t j = 0; j < reg.size(); ++j) {
          const T* kj = k + ((b * n_tokens + reg.tokens[j]) * H + h) * D;
          for (int64_t i = 0; i < seg.count; ++i) axpy(dqs.data() + i * D, dprobs[i * rk + j], kj, D);
        }
        for (int64_t i = 0; i < seg.count; ++i)
          for (int64_t d = 0; d < D; ++d)
            dq[(row0 + i * row_stride) * D + d] = static_cast<T>(scale * dqs[i * D + d]);
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
