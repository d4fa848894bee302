// Neighborhood geometry of docs/semantics.md, shared by every kernel: for one query, the keys it
// attends (row-major flat token indices) and the NAT bias-table index of each.
#pragma once

#include <array>
#include <cstdint>

// axis_window runs on the host and, compiled by nvcc, in CUDA kernels too.
#ifdef __CUDACC__
#define NB_HOST_DEVICE __host__ __device__
#else
#define NB_HOST_DEVICE
#endif

namespace natbench {

struct Axis {
  int64_t length, kernel, dilation, stride;
  bool causal;
};

// One axis of one query: global keys first + t * dilation for t in [0, count), and the bias
// index (key' - query' + kernel - 1) of t = 0 (it grows by one with t).
struct AxisWindow {
  int64_t first, count, bias0;
};

NB_HOST_DEVICE inline AxisWindow axis_window(const Axis& a, int64_t i) {
  const int64_t group = i % a.dilation, local = i / a.dilation;
  const int64_t group_len = a.length / a.dilation + (group < a.length % a.dilation ? 1 : 0);
  int64_t begin, end;
  if (a.causal) {
    int64_t leader = (local / a.stride) * a.stride + a.stride - 1;
    leader = leader < group_len - 1 ? leader : group_len - 1;
    begin = leader - a.kernel + 1 > 0 ? leader - a.kernel + 1 : 0;
    end = local + 1 < group_len ? local + 1 : group_len;
  } else {
    int64_t leader = (local / a.stride) * a.stride + a.stride / 2;
    leader = leader < group_len - 1 ? leader : group_len - 1;
    begin = leader - a.kernel / 2;
    begin = begin < 0 ? 0 : begin;
    begin = begin < group_len - a.kernel ? begin : group_len - a.kernel;
    end = begin + a.kernel;
  }
  return {begin * a.dilation + group, end - begin, begin - local + a.kernel - 1};
}

template <int Rank>
struct Geometry {
  std::array<Axis, Rank> axes;
  std::array<int64_t, Rank> token_stride;  // row-major strides of the spatial axes
  std::array<int64_t, Rank> bias_stride;   // row-major strides of the [2K-1]^Rank bias table
  int64_t tokens = 1, window_keys = 1, bias_size = 1;

  explicit Geometry(const std::array<Axis, Rank>& a) : axes(a) {
    for (int d = Rank - 1; d >= 0; --d) {
      token_stride[d] = tokens;
      bias_stride[d] = bias_size;
      tokens *= axes[d].length;
      bias_size *= 2 * axes[d].kernel - 1;
      window_keys *= axes[d].kernel;
    }
  }

  // Writes the query's keys (flat token indices) and bias indices; returns their number.
  // Order: row-major over the per-axis windows, the same for every kernel.
  int64_t neighbors(int64_t query, int64_t* keys, int64_t* bias) const {
    std::array<AxisWindow, Rank> w;
    int64_t rest = query;
    for (int d = 0; d < Rank; ++d) {
      const int64_t coordinate = (rest / token_stride[d]) % axes[d].length;
      w[d] = axis_window(axes[d], coordinate);
    }
    int64_t count = 1;
    for (int d = 0; d < Rank; ++d) count *= w[d].count;
    std::array<int64_t, Rank> t{};
    for (int64_t slot = 0; slot < count; ++slot) {
      int64_t key = 0, b = 0;
      for (int d = 0; d < Rank; ++d) {
        key += (w[d].first + t[d] * axes[d].dilation) * token_stride[d];
        b += (w[d].bias0 + t[d]) * bias_stride[d];
      }
      keys[slot] = key;
      bias[slot] = b;
      for (int d = Rank - 1; d >= 0; --d) {  // odometer over the per-axis windows
        if (++t[d] < w[d].count) break;
        t[d] = 0;
      }
    }
    return count;
  }
};

}  // namespace natbench
