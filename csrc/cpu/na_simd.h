// Vectors for the CPU kernels, written with GCC/Clang vector extensions: the compiler emits
// AVX2/AVX-512 code under -march=native and splits into narrower registers elsewhere.
#pragma once

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

namespace natbench {
namespace simd {

// Vec (32 bytes) and VecN<A, 64> run across a window row's keys (the kernels pick the width per
// call); Wide (64 bytes where AVX-512 is the target, else 32) runs along the head dim.
#if defined(__AVX512F__)
constexpr int kWideBytes = 64;
#else
constexpr int kWideBytes = 32;
#endif

template <typename A, int Bytes>
struct Lanes {
  typedef A V __attribute__((vector_size(Bytes)));
  typedef std::conditional_t<sizeof(A) == 4, int32_t, int64_t> I;
  typedef I M __attribute__((vector_size(Bytes)));
  static constexpr int W = Bytes / sizeof(A);
};

template <typename A, int Bytes>
using VecN = typename Lanes<A, Bytes>::V;
template <typename A>
using Vec = typename Lanes<A, 32>::V;
template <typename A>
constexpr int kWidth = Lanes<A, 32>::W;
template <typename A>
using Wide = typename Lanes<A, kWideBytes>::V;
template <typename A>
constexpr int kWideWidth = Lanes<A, kWideBytes>::W;

// load<V>(p) reads one vector of type V (Vec<A> unless named); store writes one.
template <typename V = void, typename A>
inline auto load(const A* p) {
  std::conditional_t<std::is_void_v<V>, Vec<A>, V> v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

template <typename A, typename V>
inline void store(A* p, const V& v) {
  std::memcpy(p, &v, sizeof(v));
}

// splat<V>(x): every lane x.
template <typename V = void, typename A>
inline auto splat(A x) {
  return x - std::conditional_t<std::is_void_v<V>, Vec<A>, V>{};  // x - 0 folds to a broadcast
}

// A vector type's lane type, its Lanes, lane count and mask type.
template <typename V>
using Elem = std::remove_cv_t<std::remove_reference_t<decltype(std::declval<V>()[0])>>;
template <typename V>
using LanesOf = Lanes<Elem<V>, sizeof(V)>;
template <typename V>
constexpr int kLanes = LanesOf<V>::W;
template <typename V>
using MaskOf = typename LanesOf<V>::M;

// Lanes [0, count) of a V set.
template <typename V>
inline MaskOf<V> first_lanes(int64_t count) {
  MaskOf<V> index;
  for (int t = 0; t < kLanes<V>; ++t) index[t] = t;
  return index < static_cast<typename LanesOf<V>::I>(count);
}

// Transposes a square of vectors in place: r[i][j] becomes r[j][i] (unpack, then pair, then
// half swaps: 24 shuffles for 8 floats).
inline void transpose(Vec<float> (&r)[8]) {
  Vec<float> t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
  }
  for (int i = 0; i < 8; i += 4)
    for (int j = 0; j < 2; ++j) {
      u[i + 2 * j] = __builtin_shufflevector(t[i + j], t[i + j + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      u[i + 2 * j + 1] = __builtin_shufflevector(t[i + j], t[i + j + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int j = 0; j < 4; ++j) {
    r[j] = __builtin_shufflevector(u[j], u[j + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    r[j + 4] = __builtin_shufflevector(u[j], u[j + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
}

inline void transpose(Vec<double> (&r)[4]) {
  Vec<double> t[4];
  for (int i = 0; i < 4; i += 2) {
    t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 4, 2, 6);
    t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 1, 5, 3, 7);
  }
  for (int j = 0; j < 2; ++j) {
    r[j] = __builtin_shufflevector(t[j], t[j + 2], 0, 1, 4, 5);
    r[j + 2] = __builtin_shufflevector(t[j], t[j + 2], 2, 3, 6, 7);
  }
}

// One vector of twice the width: lo in its first half, hi in its second (one insert, where two
// half-width stores read back as one load would stall on store-to-load forwarding).
inline VecN<float, 64> join(const Vec<float>& lo, const Vec<float>& hi) {
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

inline VecN<double, 64> join(const Vec<double>& lo, const Vec<double>& hi) {
  return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7);
}

// v[index[t]] in lane t (index: the vector type's lanes as integers, each in [0, lanes)).
// GCC emits one cross-lane permute (vpermps and kin); other compilers go lane by lane.
template <typename V>
inline V permute(const V& v, const MaskOf<V>& index) {
#if defined(__GNUC__) && !defined(__clang__)
  return __builtin_shuffle(v, index);
#else
  V out;
  for (int t = 0; t < kLanes<V>; ++t) out[t] = v[index[t]];
  return out;
#endif
}

// Calls fn(std::integral_constant<int, J>{}) for J in [0, N): a loop over registers, unrolled.
// Always inlined, so that arrays the calls index by J can live in registers (a kernel whose
// loops nest calls of it is marked flatten, which inlines the fn calls too).
template <typename Fn, int... J>
__attribute__((always_inline)) inline void unrolled_over(Fn&& fn, std::integer_sequence<int, J...>) {
  (fn(std::integral_constant<int, J>{}), ...);
}
template <int N, typename Fn>
__attribute__((always_inline)) inline void unrolled(Fn&& fn) {
  unrolled_over(fn, std::make_integer_sequence<int, N>{});
}

// Whether a vector's worth of consecutive elements is cut out of two loaded vectors in one
// instruction (window, window_permute): AVX-512's valignd/valignq and vpermt2ps/vpermt2pd, for
// 64-byte vectors. Where not, kernels load such a window unaligned instead. On Zen 4 a 64-byte
// load that is not 64-byte aligned crosses a cache line and costs two, so a multiply-add fed by
// one (the tiles' shifted keys) ran at 0.57 of the multiply-add rate, and at 0.72 fed by valignd
// out of two loads shared by seven multiply-adds (a micro-benchmark of 32-deep dots).
#if defined(__AVX512F__)
template <typename V>
constexpr bool kTwoSourceWindows = sizeof(V) == 64;
#else
template <typename V>
constexpr bool kTwoSourceWindows = false;
#endif

// The vector that starts J elements into lo, continuing into hi (0 <= J < lanes); for the
// vectors of kTwoSourceWindows only.
template <int J, typename V>
inline V window(const V& lo, const V& hi) {
  static_assert(kTwoSourceWindows<V> && J >= 0 && J < kLanes<V>, "a 64-byte window starting inside lo");
#if defined(__AVX512F__)
  const auto lo_bits = reinterpret_cast<__m512i>(lo), hi_bits = reinterpret_cast<__m512i>(hi);
  if constexpr (J == 0) return lo;
  else if constexpr (sizeof(Elem<V>) == 4) return reinterpret_cast<V>(_mm512_alignr_epi32(hi_bits, lo_bits, J));
  else return reinterpret_cast<V>(_mm512_alignr_epi64(hi_bits, lo_bits, J));
#endif
}

// Element index[t] of lo followed by hi in lane t (index: integers in [0, 2 lanes)); for the
// vectors of kTwoSourceWindows only.
template <typename V>
inline V window_permute(const V& lo, const V& hi, const MaskOf<V>& index) {
  static_assert(kTwoSourceWindows<V>, "a 64-byte two-source permute");
#if defined(__AVX512F__)
  const auto at = reinterpret_cast<__m512i>(index);
  if constexpr (sizeof(Elem<V>) == 4)
    return reinterpret_cast<V>(_mm512_permutex2var_ps(reinterpret_cast<__m512>(lo), at, reinterpret_cast<__m512>(hi)));
  else
    return reinterpret_cast<V>(_mm512_permutex2var_pd(reinterpret_cast<__m512d>(lo), at, reinterpret_cast<__m512d>(hi)));
#endif
}

// The largest lane, by halving: three shuffles and maxima for 8 lanes, not a chain of compares.
inline float max_lane(const Vec<float>& v) {
  Vec<float> m = v, s = __builtin_shufflevector(m, m, 4, 5, 6, 7, 0, 1, 2, 3);
  m = m > s ? m : s;
  s = __builtin_shufflevector(m, m, 2, 3, 0, 1, 6, 7, 4, 5);
  m = m > s ? m : s;
  s = __builtin_shufflevector(m, m, 1, 0, 3, 2, 5, 4, 7, 6);
  return (m > s ? m : s)[0];
}

inline double max_lane(const Vec<double>& v) {
  Vec<double> m = v, s = __builtin_shufflevector(m, m, 2, 3, 0, 1);
  m = m > s ? m : s;
  s = __builtin_shufflevector(m, m, 1, 0, 3, 2);
  return (m > s ? m : s)[0];
}

// 64-byte vectors: the larger of their halves, then as above.
inline float max_lane(const VecN<float, 64>& v) {
  const Vec<float> low = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7);
  const Vec<float> high = __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  return max_lane(low > high ? low : high);
}

inline double max_lane(const VecN<double, 64>& v) {
  const Vec<double> low = __builtin_shufflevector(v, v, 0, 1, 2, 3);
  const Vec<double> high = __builtin_shufflevector(v, v, 4, 5, 6, 7);
  return max_lane(low > high ? low : high);
}

// The sum of the lanes, templated on the vector type (an alias of it would not deduce).
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
template <typename V>
inline V exp(const V& x) {
  if constexpr (std::is_same_v<Elem<V>, float>) {
    // Adding and taking away 1.5 * 2^23 rounds to the nearest integer in every lane.
    const V magic = splat<V>(12582912.0f);
    const V n = (x * splat<V>(1.44269504088896341f) + magic) - magic;
    const V r = x - n * splat<V>(0.693145751953125f) - n * splat<V>(1.42860682030941723e-6f);
    V p = splat<V>(1.0f / 5040.0f);
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const MaskOf<V> bits = (__builtin_convertvector(n, MaskOf<V>) + 127) << 23;
    V two_n;
    std::memcpy(&two_n, &bits, sizeof(two_n));
    return x < splat<V>(-87.0f) ? splat<V>(0.0f) : p * two_n;
  } else {
    V y;
    for (int t = 0; t < kLanes<V>; ++t) y[t] = std::exp(x[t]);
    return y;
  }
}

}  // namespace simd
}  // namespace natbench
