// bfloat16 products on AVX512-BF16 (vdpbf16ps: 16 float lanes, each adding
// the products of a pair of bfloat16s, so one instruction does twice the
// multiply-adds of a float FMA). 12 x 32 outputs like the float AVX-512
// kernel; both panels hold k in pairs (Layout::KPairs). See cpu_gemm_kernels.h.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "cpu_gemm_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")

namespace fastlayers {
namespace cpu {
namespace avx512_bf16 {
namespace {

#include "cpu_gemm_avx512_traits.inl"
#include "cpu_gemm_microkernels.inl"

constexpr int kMR = 12, kNV = 2, kNR = kNV * 16;

// kc is even (k_align = 2). Per k pair: two B loads (16 columns x 2 k each),
// and per row one 32-bit broadcast of that row's pair of A.
void dpbf16_tile(int64_t kc, const Bf16Bits* a, const Bf16Bits* b, float* c, int64_t ldc, int mr, int nr,
                 bool accumulate, const float* bias, bool relu) {
  __m512 acc[kMR][kNV];
#pragma GCC unroll 12
  for (int r = 0; r < kMR; ++r) acc[r][0] = _mm512_setzero_ps(), acc[r][1] = _mm512_setzero_ps();
  for (int64_t q = 0; q < kc / 2; ++q) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + 32);
#pragma GCC unroll 12
    for (int r = 0; r < kMR; ++r) {
      int32_t pair;
      std::memcpy(&pair, a + 2 * r, sizeof(pair));
      const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], av, b0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], av, b1);
    }
    a += 2 * kMR;
    b += 2 * kNR;
  }
  store_block<Avx512Float, kMR, kNV>(acc, c, ldc, mr, nr, accumulate, bias, relu);
}

}  // namespace

TileKernel<float, Bf16Bits> bf16_kernel() { return {kMR, kNR, 2, Layout::KPairs, Layout::KPairs, &dpbf16_tile}; }

// vcvtneps2bf16 rounds to nearest even, as c10::BFloat16 does (a NaN stays a NaN).
void to_bf16(const float* src, Bf16Bits* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm256_mask_storeu_epi16(dst + i, m, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i)));
  }
}

}  // namespace avx512_bf16
}  // namespace cpu
}  // namespace fastlayers

#pragma GCC pop_options

#else
namespace fastlayers::cpu::avx512_bf16 {
TileKernel<float, Bf16Bits> bf16_kernel() { return {}; }
void to_bf16(const float*, Bf16Bits*, int64_t) {}
}  // namespace fastlayers::cpu::avx512_bf16
#endif
