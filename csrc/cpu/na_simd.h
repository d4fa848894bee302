// 32-byte vectors for the CPU kernels, written with GCC/Clang vector extensions: the compiler
// emits AVX2/AVX-512VL code under -march=native and splits into narrower registers elsewhere.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace natbench {
namespace simd {

template <typename A>
struct Lanes;

template <>
struct Lanes<float> {
  typedef float V __attribute__((vector_size(32)));
  typedef int32_t I;
  typedef I M __attribute__((vector_size(32)));
  static constexpr int W = 8;
};

template <>
struct Lanes<double> {
  typedef double V __attribute__((vector_size(32)));
  typedef int64_t I;
  typedef I M __attribute__((vector_size(32)));
  static constexpr int W = 4;
};

template <typename A>
using Vec = typename Lanes<A>::V;
template <typename A>
using Mask = typename Lanes<A>::M;
template <typename A>
constexpr int kWidth = Lanes<A>::W;

template <typename A>
inline Vec<A> load(const A* p) {
  Vec<A> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename A>
inline void store(A* p, const Vec<A>& v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename A>
inline Vec<A> splat(A x) {
  return Vec<A>{} + x;
}

// Lanes [0, count) set.
template <typename A>
inline Mask<A> first_lanes(int64_t count) {
  Mask<A> index;
  for (int t = 0; t < kWidth<A>; ++t) index[t] = t;
  return index < static_cast<typename Lanes<A>::I>(count);
}

// Lane reductions, templated on the vector type (an alias of it would not deduce).
template <typename V>
inline auto max_lane(const V& v) {
  auto m = v[0];
  for (size_t t = 1; t < sizeof(V) / sizeof(m); ++t) m = v[t] > m ? v[t] : m;
  return m;
}

template <typename V>
inline auto sum_lanes(const V& v) {
  decltype(v[0] + 0) s = 0;
  for (size_t t = 0; t < sizeof(V) / sizeof(s); ++t) s += v[t];
  return s;
}

// e^x per lane for x <= 88 (softmax arguments are <= 0); lanes below the smallest normal result (and -inf) give exactly 0.
// float: x = n ln2 + r with |r| <= ln2/2 (ln2 split in two for an exact product), e^r by its
// degree-7 Taylor polynomial (truncation under 1e-8 relative), 2^n built in the exponent bits.
// double keeps the C library's exp, lane by lane: the double path is the precise one.
inline Vec<float> exp(const Vec<float>& x) {
  // Adding and taking away 1.5 * 2^23 rounds to the nearest integer in every lane.
  const Vec<float> magic = splat(12582912.0f);
  const Vec<float> n = (x * splat(1.44269504088896341f) + magic) - magic;
  const Vec<float> r = x - n * splat(0.693145751953125f) - n * splat(1.42860682030941723e-6f);
  Vec<float> p = splat(1.0f / 5040.0f);
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const Mask<float> bits = (__builtin_convertvector(n, Mask<float>) + 127) << 23;
  Vec<float> two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return x < splat(-87.0f) ? splat(0.0f) : p * two_n;
}

inline Vec<double> exp(const Vec<double>& x) {
  Vec<double> y;
  for (int t = 0; t < 4; ++t) y[t] = std::exp(x[t]);
  return y;
}

}  // namespace simd
}  // namespace natbench
