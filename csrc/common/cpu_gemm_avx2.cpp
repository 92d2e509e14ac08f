// AVX2 + FMA kernels (256-bit vectors, 16 registers): 6 x 16 floats or 6 x 8
// doubles, 12 accumulators + 2 B vectors + 1 broadcast. See cpu_gemm_kernels.h.
#include <algorithm>
#include <cstdint>

#include "cpu_gemm_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace fastlayers {
namespace cpu {
namespace avx2 {
namespace {

// Lane masks for the first n < W lanes: a sliding window over -1s then 0s.
alignas(32) const int64_t kMaskWindow[8] = {-1, -1, -1, -1, 0, 0, 0, 0};
alignas(32) const int32_t kMaskWindow32[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

struct Float {
  using Acc = float;
  using V = __m256;
  static constexpr int W = 8;
  static __m256i mask(int n) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskWindow32 + 8 - n)); }
  static V zero() { return _mm256_setzero_ps(); }
  static V set1(float s) { return _mm256_set1_ps(s); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static V load_n(const float* p, int n) { return _mm256_maskload_ps(p, mask(n)); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static void store_n(float* p, V v, int n) { _mm256_maskstore_ps(p, mask(n), v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V relu(V v) { return _mm256_max_ps(_mm256_setzero_ps(), v); }  // max(0, NaN) = NaN
  static float sum(V v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
  }
};

struct Double {
  using Acc = double;
  using V = __m256d;
  static constexpr int W = 4;
  static __m256i mask(int n) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskWindow + 4 - n)); }
  static V zero() { return _mm256_setzero_pd(); }
  static V set1(double s) { return _mm256_set1_pd(s); }
  static V load(const double* p) { return _mm256_loadu_pd(p); }
  static V load_n(const double* p, int n) { return _mm256_maskload_pd(p, mask(n)); }
  static void store(double* p, V v) { _mm256_storeu_pd(p, v); }
  static void store_n(double* p, V v, int n) { _mm256_maskstore_pd(p, mask(n), v); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static V relu(V v) { return _mm256_max_pd(_mm256_setzero_pd(), v); }
  static double sum(V v) {
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
  }
};

#include "cpu_gemm_microkernels.inl"

}  // namespace

KernelSet<float> float_kernels() {
  KernelSet<float> k = kernel_set<Float, 6, 2>();
  k.transpose_8x8 = &transpose_8x8;
  return k;
}

void transpose_8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x20);
    t[i + 4] = _mm256_permute2f128_ps(r[i], r[i + 4], 0x31);
  }
  for (int i = 0; i < 8; ++i) _mm256_storeu_ps(dst + i * ldd, t[i]);
}
KernelSet<double> double_kernels() { return kernel_set<Double, 6, 2>(); }

}  // namespace avx2
}  // namespace cpu
}  // namespace fastlayers

#pragma GCC pop_options

#else  // not x86-64: the driver never asks (best_isa() is portable there)
namespace fastlayers::cpu::avx2 {
KernelSet<float> float_kernels() { return portable::float_kernels(); }
KernelSet<double> double_kernels() { return portable::double_kernels(); }
void transpose_8x8(const float*, int64_t, float*, int64_t) {}
}  // namespace fastlayers::cpu::avx2
#endif
