// The CPU matrix product every fastlayers op builds on.
//
//   C[M,N] = epilogue( sum_p A(i,p) * B(p,j) )
//
// A and B are read through strides, so transposed, sliced and expanded
// tensors need no copy: packing (below) reads them once per block anyway.
// Packing also converts to the accumulation type (float for half/bfloat16,
// so those dtypes come for free) and can multiply A by a ReLU mask taken
// from another strided matrix, `(mask(i,p) > 0)`. The epilogue adds a
// per-column bias and applies ReLU when the last block of the reduction is
// stored. Optionally the row sums of the (masked) A are produced in the same
// pass: that is the bias gradient of a linear layer.
//
// Blocking follows the usual packed-GEMM recipe: A and B are packed once
// into KC x MR and KC x NR panels, and an MR x NR register-blocked micro-
// kernel runs over them. The micro-kernel uses AVX-512 or AVX2+FMA when the
// processor has them (checked at run time) and a portable loop otherwise.
// Work is split over (row block, column chunk) tasks; a task owns its part
// of C across the whole reduction, so results do not depend on the number
// of threads. Up to 4 rows of A skip packing (dot-product and axpy paths).
#pragma once

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define FASTLAYERS_X86 1
#endif

namespace fastlayers {
namespace cpu {

// Element (r, c) of a strided matrix is data[r * rs + c * cs].
template <typename T>
struct MatrixView {
  const T* data = nullptr;
  int64_t rows = 0, cols = 0, rs = 0, cs = 0;
  T operator()(int64_t r, int64_t c) const { return data[r * rs + c * cs]; }
  MatrixView transposed() const { return {data, cols, rows, cs, rs}; }
};

template <typename Acc>
struct Epilogue {
  const Acc* bias = nullptr;  // length N, added per column; may be null
  bool relu = false;
};

// Cache blocking: KC rows of the reduction per packed block; MC_PANELS
// micro-panels of A per task.
constexpr int64_t KC = 256;
constexpr int64_t MC_PANELS = 12;

// Stores an MR x NR tile: overwrite or accumulate into C, then bias and ReLU
// (only on the last reduction block). `nan` survives ReLU as in torch.relu.
template <typename Acc>
inline void store_tile(const Acc* tile, int ld_tile, Acc* c, int64_t ldc,
                       int mr, int nr, bool accumulate, const Acc* bias,
                       bool relu) {
  for (int r = 0; r < mr; ++r) {
    Acc* crow = c + r * ldc;
    const Acc* trow = tile + r * ld_tile;
    for (int j = 0; j < nr; ++j) {
      Acc v = trow[j];
      if (accumulate) v += crow[j];
      if (bias) v += bias[j];
      if (relu && v < Acc(0)) v = Acc(0);
      crow[j] = v;
    }
  }
}

template <typename Acc>
using MicroKernel = void (*)(int64_t kc, const Acc* a, const Acc* b, Acc* c,
                             int64_t ldc, int mr, int nr, bool accumulate,
                             const Acc* bias, bool relu);

template <typename Acc, int MR, int NR>
void micro_kernel_portable(int64_t kc, const Acc* a, const Acc* b, Acc* c,
                           int64_t ldc, int mr, int nr, bool accumulate,
                           const Acc* bias, bool relu) {
  Acc acc[MR][NR] = {};
  for (int64_t p = 0; p < kc; ++p) {
    for (int r = 0; r < MR; ++r) {
      const Acc av = a[r];
      for (int j = 0; j < NR; ++j) acc[r][j] += av * b[j];
    }
    a += MR;
    b += NR;
  }
  store_tile(&acc[0][0], NR, c, ldc, mr, nr, accumulate, bias, relu);
}

#ifdef FASTLAYERS_X86
// 6 x 16 floats: 12 accumulators + 2 B vectors + 1 broadcast = 15 of 16 ymm.
__attribute__((target("avx2,fma"))) inline void micro_kernel_avx2(
    int64_t kc, const float* a, const float* b, float* c, int64_t ldc, int mr,
    int nr, bool accumulate, const float* bias, bool relu) {
  __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
  __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
  __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
  __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
  __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
  __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
  for (int64_t p = 0; p < kc; ++p) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    __m256 av = _mm256_broadcast_ss(a + 0);
    c00 = _mm256_fmadd_ps(av, b0, c00), c01 = _mm256_fmadd_ps(av, b1, c01);
    av = _mm256_broadcast_ss(a + 1);
    c10 = _mm256_fmadd_ps(av, b0, c10), c11 = _mm256_fmadd_ps(av, b1, c11);
    av = _mm256_broadcast_ss(a + 2);
    c20 = _mm256_fmadd_ps(av, b0, c20), c21 = _mm256_fmadd_ps(av, b1, c21);
    av = _mm256_broadcast_ss(a + 3);
    c30 = _mm256_fmadd_ps(av, b0, c30), c31 = _mm256_fmadd_ps(av, b1, c31);
    av = _mm256_broadcast_ss(a + 4);
    c40 = _mm256_fmadd_ps(av, b0, c40), c41 = _mm256_fmadd_ps(av, b1, c41);
    av = _mm256_broadcast_ss(a + 5);
    c50 = _mm256_fmadd_ps(av, b0, c50), c51 = _mm256_fmadd_ps(av, b1, c51);
    a += 6;
    b += 16;
  }
  const __m256 rows[6][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                             {c30, c31}, {c40, c41}, {c50, c51}};
  if (mr == 6 && nr == 16) {
    const __m256 zero = _mm256_setzero_ps();
    const __m256 b0 = bias ? _mm256_loadu_ps(bias) : zero;
    const __m256 b1 = bias ? _mm256_loadu_ps(bias + 8) : zero;
    for (int r = 0; r < 6; ++r) {
      float* crow = c + r * ldc;
      __m256 v0 = rows[r][0], v1 = rows[r][1];
      if (accumulate) {
        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(crow));
        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(crow + 8));
      }
      if (bias) v0 = _mm256_add_ps(v0, b0), v1 = _mm256_add_ps(v1, b1);
      // max(0, v) returns v when v is NaN, as torch.relu does.
      if (relu) v0 = _mm256_max_ps(zero, v0), v1 = _mm256_max_ps(zero, v1);
      _mm256_storeu_ps(crow, v0);
      _mm256_storeu_ps(crow + 8, v1);
    }
    return;
  }
  alignas(32) float tile[6][16];
  for (int r = 0; r < 6; ++r) {
    _mm256_store_ps(&tile[r][0], rows[r][0]);
    _mm256_store_ps(&tile[r][8], rows[r][1]);
  }
  store_tile(&tile[0][0], 16, c, ldc, mr, nr, accumulate, bias, relu);
}

// 6 x 8 doubles, same register budget.
__attribute__((target("avx2,fma"))) inline void micro_kernel_avx2(
    int64_t kc, const double* a, const double* b, double* c, int64_t ldc,
    int mr, int nr, bool accumulate, const double* bias, bool relu) {
  __m256d c00 = _mm256_setzero_pd(), c01 = _mm256_setzero_pd();
  __m256d c10 = _mm256_setzero_pd(), c11 = _mm256_setzero_pd();
  __m256d c20 = _mm256_setzero_pd(), c21 = _mm256_setzero_pd();
  __m256d c30 = _mm256_setzero_pd(), c31 = _mm256_setzero_pd();
  __m256d c40 = _mm256_setzero_pd(), c41 = _mm256_setzero_pd();
  __m256d c50 = _mm256_setzero_pd(), c51 = _mm256_setzero_pd();
  for (int64_t p = 0; p < kc; ++p) {
    const __m256d b0 = _mm256_loadu_pd(b), b1 = _mm256_loadu_pd(b + 4);
    __m256d av = _mm256_broadcast_sd(a + 0);
    c00 = _mm256_fmadd_pd(av, b0, c00), c01 = _mm256_fmadd_pd(av, b1, c01);
    av = _mm256_broadcast_sd(a + 1);
    c10 = _mm256_fmadd_pd(av, b0, c10), c11 = _mm256_fmadd_pd(av, b1, c11);
    av = _mm256_broadcast_sd(a + 2);
    c20 = _mm256_fmadd_pd(av, b0, c20), c21 = _mm256_fmadd_pd(av, b1, c21);
    av = _mm256_broadcast_sd(a + 3);
    c30 = _mm256_fmadd_pd(av, b0, c30), c31 = _mm256_fmadd_pd(av, b1, c31);
    av = _mm256_broadcast_sd(a + 4);
    c40 = _mm256_fmadd_pd(av, b0, c40), c41 = _mm256_fmadd_pd(av, b1, c41);
    av = _mm256_broadcast_sd(a + 5);
    c50 = _mm256_fmadd_pd(av, b0, c50), c51 = _mm256_fmadd_pd(av, b1, c51);
    a += 6;
    b += 8;
  }
  alignas(32) double tile[6][8];
  _mm256_store_pd(&tile[0][0], c00), _mm256_store_pd(&tile[0][4], c01);
  _mm256_store_pd(&tile[1][0], c10), _mm256_store_pd(&tile[1][4], c11);
  _mm256_store_pd(&tile[2][0], c20), _mm256_store_pd(&tile[2][4], c21);
  _mm256_store_pd(&tile[3][0], c30), _mm256_store_pd(&tile[3][4], c31);
  _mm256_store_pd(&tile[4][0], c40), _mm256_store_pd(&tile[4][4], c41);
  _mm256_store_pd(&tile[5][0], c50), _mm256_store_pd(&tile[5][4], c51);
  store_tile(&tile[0][0], 8, c, ldc, mr, nr, accumulate, bias, relu);
}

// MR x (2 vectors) tile with 512-bit vectors: MR = 12 gives 24 accumulators
// + 2 B vectors + broadcasts within the 32 zmm registers.
template <typename Acc>
struct Avx512;
template <>
struct Avx512<float> {
  using V = __m512;
  static constexpr int W = 16;
  __attribute__((target("avx512f"))) static V zero() { return _mm512_setzero_ps(); }
  __attribute__((target("avx512f"))) static V load(const float* p) { return _mm512_loadu_ps(p); }
  __attribute__((target("avx512f"))) static V set1(float v) { return _mm512_set1_ps(v); }
  __attribute__((target("avx512f"))) static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  __attribute__((target("avx512f"))) static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
};
template <>
struct Avx512<double> {
  using V = __m512d;
  static constexpr int W = 8;
  __attribute__((target("avx512f"))) static V zero() { return _mm512_setzero_pd(); }
  __attribute__((target("avx512f"))) static V load(const double* p) { return _mm512_loadu_pd(p); }
  __attribute__((target("avx512f"))) static V set1(double v) { return _mm512_set1_pd(v); }
  __attribute__((target("avx512f"))) static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  __attribute__((target("avx512f"))) static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
};

constexpr int kAvx512MR = 12;

template <typename Acc>
__attribute__((target("avx512f"))) void micro_kernel_avx512(
    int64_t kc, const Acc* a, const Acc* b, Acc* c, int64_t ldc, int mr, int nr,
    bool accumulate, const Acc* bias, bool relu) {
  using S = Avx512<Acc>;
  constexpr int MR = kAvx512MR, W = S::W;
  typename S::V acc0[MR], acc1[MR];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) acc0[r] = S::zero(), acc1[r] = S::zero();
  for (int64_t p = 0; p < kc; ++p) {
    const typename S::V b0 = S::load(b), b1 = S::load(b + W);
#pragma GCC unroll 12
    for (int r = 0; r < MR; ++r) {
      const typename S::V av = S::set1(a[r]);
      acc0[r] = S::fma(av, b0, acc0[r]);
      acc1[r] = S::fma(av, b1, acc1[r]);
    }
    a += MR;
    b += 2 * W;
  }
  alignas(64) Acc tile[MR][2 * W];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) S::store(&tile[r][0], acc0[r]), S::store(&tile[r][W], acc1[r]);
  store_tile(&tile[0][0], 2 * W, c, ldc, mr, nr, accumulate, bias, relu);
}

inline bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") &&
                          __builtin_cpu_supports("fma");
  return has;
}
inline bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}
#endif

// The micro-kernel for this processor and the panel shapes it expects.
template <typename Acc>
struct KernelSpec {
  int mr, nr;
  MicroKernel<Acc> fn;
};

template <typename Acc>
KernelSpec<Acc> select_micro_kernel() {
  constexpr int vec256 = 32 / sizeof(Acc);  // elements in a 256-bit vector
#ifdef FASTLAYERS_X86
  if (cpu_has_avx512()) {
    return {kAvx512MR, 2 * Avx512<Acc>::W, &micro_kernel_avx512<Acc>};
  }
  if (cpu_has_avx2_fma()) {
    return {6, 2 * vec256, static_cast<MicroKernel<Acc>>(&micro_kernel_avx2)};
  }
#endif
  return {6, 2 * vec256, &micro_kernel_portable<Acc, 6, 2 * vec256>};
}

template <typename T>
inline bool relu_mask_on(T v) {
  return static_cast<float>(v) > 0.f;
}
inline bool relu_mask_on(double v) { return v > 0.0; }

// Packs one MR-row panel of A: rows [i0, i0+MR) x columns [p0, p0+kc),
// p-major, zero-padded past the last row. Applies the mask and, if
// `row_sums` is given, adds each packed row's sum to it. The loop order
// follows A's smaller stride, so reads stay sequential either way.
template <bool kMasked, typename T, typename Acc>
void pack_a_panel_impl(Acc* dst, int MR, const MatrixView<T>& a,
                       const MatrixView<T>& mask, int64_t i0, int64_t p0,
                       int64_t kc, Acc* row_sums) {
  const int mr = static_cast<int>(std::min<int64_t>(MR, a.rows - i0));
  // Both loads happen and a select picks the value: a branch on a ReLU
  // mask mispredicts half the time.
  auto value = [&](int64_t i, int64_t p) -> Acc {
    const Acc v = static_cast<Acc>(a(i, p));
    if constexpr (kMasked) return relu_mask_on(mask(i, p)) ? v : Acc(0);
    return v;
  };
  if (mr < MR) std::fill(dst, dst + MR * kc, Acc(0));
  if (std::abs(a.rs) < std::abs(a.cs)) {
    Acc sums[32] = {};  // MR <= 32
    for (int64_t p = 0; p < kc; ++p) {
      Acc* out = dst + p * MR;
      for (int r = 0; r < mr; ++r) {
        const Acc v = value(i0 + r, p0 + p);
        out[r] = v;
        sums[r] += v;
      }
    }
    if (row_sums)
      for (int r = 0; r < mr; ++r) row_sums[i0 + r] += sums[r];
  } else {
    for (int r = 0; r < mr; ++r) {
      Acc sum = Acc(0);
      for (int64_t p = 0; p < kc; ++p) {
        const Acc v = value(i0 + r, p0 + p);
        dst[p * MR + r] = v;
        sum += v;
      }
      if (row_sums) row_sums[i0 + r] += sum;
    }
  }
}

template <typename T, typename Acc>
void pack_a_panel(Acc* dst, int MR, const MatrixView<T>& a,
                  const MatrixView<T>* mask, int64_t i0, int64_t p0,
                  int64_t kc, Acc* row_sums) {
  if (mask) {
    pack_a_panel_impl<true>(dst, MR, a, *mask, i0, p0, kc, row_sums);
  } else {
    pack_a_panel_impl<false>(dst, MR, a, a, i0, p0, kc, row_sums);
  }
}

#ifdef FASTLAYERS_X86
// dst[c * ldd + r] = src[r * lds + c] for an 8 x 8 block of floats.
__attribute__((target("avx2"))) inline void transpose_8x8(const float* src,
                                                           int64_t lds,
                                                           float* dst,
                                                           int64_t ldd) {
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
#endif

// Packs one NR-column panel of B: rows [p0, p0+kc), columns [j0, j0+NR),
// zero-padded past the last column; loop order as for A.
template <typename T, typename Acc>
void pack_b_panel(Acc* dst, int NR, const MatrixView<T>& b, int64_t p0,
                  int64_t kc, int64_t j0) {
  const int nr = static_cast<int>(std::min<int64_t>(NR, b.cols - j0));
  if (nr < NR) std::fill(dst, dst + NR * kc, Acc(0));
  if (std::abs(b.cs) <= std::abs(b.rs)) {
    for (int64_t p = 0; p < kc; ++p) {
      const T* src = b.data + (p0 + p) * b.rs + j0 * b.cs;
      Acc* out = dst + p * NR;
      if (b.cs == 1) {
        for (int j = 0; j < nr; ++j) out[j] = static_cast<Acc>(src[j]);
      } else {
        for (int j = 0; j < nr; ++j) out[j] = static_cast<Acc>(src[j * b.cs]);
      }
    }
  } else {
    int64_t p_done = 0;  // rows already packed by the 8 x 8 transposes
#ifdef FASTLAYERS_X86
    // A weight read as B[k, n] = W[n, k]: each panel is a transpose.
    if constexpr (std::is_same_v<T, float>) {
      if (b.rs == 1 && nr % 8 == 0 && cpu_has_avx2_fma()) {
        p_done = kc - kc % 8;
        for (int j = 0; j < nr; j += 8)
          for (int64_t p = 0; p < p_done; p += 8)
            transpose_8x8(b.data + (p0 + p) + (j0 + j) * b.cs, b.cs,
                          dst + p * NR + j, NR);
      }
    }
#endif
    for (int j = 0; j < nr; ++j) {
      const T* src = b.data + p0 * b.rs + (j0 + j) * b.cs;
      for (int64_t p = p_done; p < kc; ++p) dst[p * NR + j] = static_cast<Acc>(src[p * b.rs]);
    }
  }
}

// A few rows of A against K-contiguous columns of B (a linear layer's
// weight): each output is one dot product, so nothing is packed. This is
// the chapter's 2 x 20 -> 256 case, where packing would cost more than the
// arithmetic.
constexpr int64_t kSmallRows = 4;

template <typename Acc>
using SmallRowsKernel = void (*)(const Acc* a, int64_t lda, int64_t m,
                                 const Acc* b, int64_t ldb, int64_t k,
                                 int64_t j0, int64_t j1, Acc* c, int64_t ldc,
                                 const Acc* bias, bool relu);

template <typename Acc>
void small_rows_portable(const Acc* a, int64_t lda, int64_t m, const Acc* b,
                         int64_t ldb, int64_t k, int64_t j0, int64_t j1,
                         Acc* c, int64_t ldc, const Acc* bias, bool relu) {
  for (int64_t j = j0; j < j1; ++j) {
    const Acc* bj = b + j * ldb;
    for (int64_t i = 0; i < m; ++i) {
      const Acc* ai = a + i * lda;
      Acc acc = Acc(0);
      for (int64_t p = 0; p < k; ++p) acc += ai[p] * bj[p];
      store_tile(&acc, 1, c + i * ldc + j, ldc, 1, 1, false,
                 bias ? bias + j : nullptr, relu);
    }
  }
}

#ifdef FASTLAYERS_X86
template <typename Acc>
struct Avx2;
template <>
struct Avx2<float> {
  using V = __m256;
  static constexpr int W = 8;
  __attribute__((target("avx2,fma"))) static V zero() { return _mm256_setzero_ps(); }
  __attribute__((target("avx2,fma"))) static V fma(const float* a, const float* b, V c) {
    return _mm256_fmadd_ps(_mm256_loadu_ps(a), _mm256_loadu_ps(b), c);
  }
  __attribute__((target("avx2,fma"))) static float sum(V v) {
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
  }
};
template <>
struct Avx2<double> {
  using V = __m256d;
  static constexpr int W = 4;
  __attribute__((target("avx2,fma"))) static V zero() { return _mm256_setzero_pd(); }
  __attribute__((target("avx2,fma"))) static V fma(const double* a, const double* b, V c) {
    return _mm256_fmadd_pd(_mm256_loadu_pd(a), _mm256_loadu_pd(b), c);
  }
  __attribute__((target("avx2,fma"))) static double sum(V v) {
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
  }
};

template <typename Acc>
__attribute__((target("avx2,fma"))) void small_rows_avx2(
    const Acc* a, int64_t lda, int64_t m, const Acc* b, int64_t ldb, int64_t k,
    int64_t j0, int64_t j1, Acc* c, int64_t ldc, const Acc* bias, bool relu) {
  using S = Avx2<Acc>;
  constexpr int W = S::W;
  const int64_t kv = k - k % W;
  for (int64_t j = j0; j < j1; ++j) {
    const Acc* bj = b + j * ldb;
    typename S::V acc[kSmallRows];
#pragma GCC unroll 4
    for (int i = 0; i < kSmallRows; ++i) acc[i] = S::zero();
    for (int64_t p = 0; p < kv; p += W) {
#pragma GCC unroll 4
      for (int i = 0; i < kSmallRows; ++i)
        if (i < m) acc[i] = S::fma(a + i * lda + p, bj + p, acc[i]);
    }
    for (int64_t i = 0; i < m; ++i) {
      Acc v = S::sum(acc[i]);
      for (int64_t p = kv; p < k; ++p) v += a[i * lda + p] * bj[p];
      if (bias) v += bias[j];
      if (relu && v < Acc(0)) v = Acc(0);
      c[i * ldc + j] = v;
    }
  }
}
#endif

// The same few rows against B with contiguous rows (B[p, :]): each output
// row is a sum of scaled B rows, vectorised along N.
template <typename Acc>
using SmallRowsAxpyKernel = void (*)(const Acc* a, int64_t lda, int64_t m,
                                     const Acc* b, int64_t ldb, int64_t k,
                                     int64_t n, Acc* c, int64_t ldc,
                                     const Acc* bias, bool relu);

template <typename Acc>
inline __attribute__((always_inline)) void small_rows_axpy_body(
    const Acc* __restrict__ a, int64_t lda, int64_t m, const Acc* __restrict__ b,
    int64_t ldb, int64_t k, int64_t n, Acc* __restrict__ c, int64_t ldc,
    const Acc* __restrict__ bias, bool relu) {
  for (int64_t i = 0; i < m; ++i) {
    Acc* ci = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) ci[j] = Acc(0);
    for (int64_t p = 0; p < k; ++p) {
      const Acc av = a[i * lda + p];
      const Acc* bp = b + p * ldb;
      for (int64_t j = 0; j < n; ++j) ci[j] += av * bp[j];
    }
    if (bias)
      for (int64_t j = 0; j < n; ++j) ci[j] += bias[j];
    if (relu)
      for (int64_t j = 0; j < n; ++j) ci[j] = ci[j] < Acc(0) ? Acc(0) : ci[j];
  }
}

template <typename Acc>
void small_rows_axpy_portable(const Acc* a, int64_t lda, int64_t m, const Acc* b, int64_t ldb, int64_t k,
                              int64_t n, Acc* c, int64_t ldc, const Acc* bias, bool relu) {
  small_rows_axpy_body(a, lda, m, b, ldb, k, n, c, ldc, bias, relu);
}
#ifdef FASTLAYERS_X86
template <typename Acc>
__attribute__((target("avx2,fma"))) void small_rows_axpy_avx2(const Acc* a, int64_t lda, int64_t m, const Acc* b,
                                                             int64_t ldb, int64_t k, int64_t n, Acc* c, int64_t ldc,
                                                             const Acc* bias, bool relu) {
  small_rows_axpy_body(a, lda, m, b, ldb, k, n, c, ldc, bias, relu);
}
#endif

template <typename Acc>
SmallRowsAxpyKernel<Acc> select_small_rows_axpy_kernel() {
#ifdef FASTLAYERS_X86
  if (cpu_has_avx2_fma()) return &small_rows_axpy_avx2<Acc>;
#endif
  return &small_rows_axpy_portable<Acc>;
}

template <typename Acc>
SmallRowsKernel<Acc> select_small_rows_kernel() {
#ifdef FASTLAYERS_X86
  if (cpu_has_avx2_fma()) return &small_rows_avx2<Acc>;
#endif
  return &small_rows_portable<Acc>;
}

// Below this many multiply-adds a product runs on the calling thread: waking
// the pool costs more than the work.
constexpr int64_t kSerialWork = int64_t(1) << 17;

template <typename F>
void maybe_parallel(bool serial, int64_t n, const F& f) {
  if (serial) {
    f(0, n);
  } else {
    at::parallel_for(0, n, 1, f);
  }
}

// Space for the packed operands, kept per calling thread between calls:
// a fresh multi-megabyte allocation is handed back to the system on free,
// and re-touching it costs a page fault per 4 KB on every call. Requests
// above kKeepBytes are allocated for the call alone.
template <typename Acc>
Acc* packing_space(size_t n, std::unique_ptr<Acc[]>& once) {
  constexpr size_t kKeepBytes = size_t(64) << 20;
  if (n * sizeof(Acc) > kKeepBytes) {
    once.reset(new Acc[n]);
    return once.get();
  }
  thread_local std::unique_ptr<Acc[]> kept;
  thread_local size_t kept_size = 0;
  if (kept_size < n) {
    kept.reset(new Acc[n]);
    kept_size = n;
  }
  return kept.get();
}

// row_sums[i] = sum_p A(i,p) * (mask(i,p) > 0): the bias gradient when no
// product carries it (no weight gradient, or no weight columns).
template <typename T, typename Acc>
void masked_row_sums(const MatrixView<T>& a, const MatrixView<T>* mask, Acc* row_sums) {
  auto rows = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      Acc s = Acc(0);
      for (int64_t p = 0; p < a.cols; ++p)
        if (!mask || relu_mask_on((*mask)(i, p))) s += static_cast<Acc>(a(i, p));
      row_sums[i] = s;
    }
  };
  maybe_parallel(a.rows * a.cols <= kSerialWork, a.rows, rows);
}

// C (M x N, row stride ldc, type T) = epilogue(A_masked @ B).
// `row_sums` (length M, type Acc), if given, receives the row sums of the
// masked A. `mask`, if given, has A's shape.
template <typename T, typename Acc>
void gemm(const MatrixView<T>& a, const MatrixView<T>* mask,
          const MatrixView<T>& b, T* c, int64_t ldc, Epilogue<Acc> epilogue,
          Acc* row_sums) {
  const int64_t M = a.rows, K = a.cols, N = b.cols;
  if (M == 0 || N == 0) {
    // Nothing to store, but the row sums are still due.
    if (row_sums) masked_row_sums<T, Acc>(a, mask, row_sums);
    return;
  }

  // Accumulate straight into C when it has the accumulation type; otherwise
  // into a float workspace, converted once at the end.
  constexpr bool direct = std::is_same_v<T, Acc>;
  std::vector<Acc> workspace;
  Acc* cacc;
  int64_t ldacc;
  if constexpr (direct) {
    cacc = c;
    ldacc = ldc;
  } else {
    workspace.resize(static_cast<size_t>(M * N));
    cacc = workspace.data();
    ldacc = N;
  }
  const bool serial = M * N * K <= kSerialWork || at::get_num_threads() == 1;

  if constexpr (direct) {
    if (M <= kSmallRows && K > 0 && !mask && !row_sums && a.cs == 1 &&
        b.rs == 1) {
      const SmallRowsKernel<Acc> kernel = select_small_rows_kernel<Acc>();
      maybe_parallel(serial, N, [&](int64_t j0, int64_t j1) {
        kernel(a.data, a.rs, M, b.data, b.cs, K, j0, j1, c, ldc,
               epilogue.bias, epilogue.relu);
      });
      return;
    }
    if (M <= kSmallRows && K > 0 && !mask && !row_sums && a.cs == 1 &&
        b.cs == 1 && M * N * K <= kSerialWork) {
      select_small_rows_axpy_kernel<Acc>()(a.data, a.rs, M, b.data, b.rs, K, N, c, ldc, epilogue.bias,
                                           epilogue.relu);
      return;
    }
  }

  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        Acc v = epilogue.bias ? epilogue.bias[j] : Acc(0);
        if (epilogue.relu && v < Acc(0)) v = Acc(0);
        cacc[i * ldacc + j] = v;
      }
    if (row_sums) std::fill(row_sums, row_sums + M, Acc(0));
  } else {
    const KernelSpec<Acc> kernel = select_micro_kernel<Acc>();
    const int MR = kernel.mr, NR = kernel.nr;
    const int64_t kc_max = std::min<int64_t>(KC, K);
    const int64_t k_blocks = (K + KC - 1) / KC;
    const int64_t a_panels = (M + MR - 1) / MR;
    const int64_t b_panels = (N + NR - 1) / NR;

    // Both operands are packed once: k-block kb of A holds a_panels panels
    // of kc x MR, of B b_panels panels of kc x NR. An A panel is packed by
    // one task walking the k-blocks in order, so each row sum has one owner
    // and a fixed order.
    const int64_t a_block = kc_max * a_panels * MR, b_block = kc_max * b_panels * NR;
    std::unique_ptr<Acc[]> once;
    Acc* const packed_a = packing_space<Acc>(k_blocks * (a_block + b_block), once);
    Acc* const packed_b = packed_a + k_blocks * a_block;
    if (row_sums) std::fill(row_sums, row_sums + M, Acc(0));
    auto pack_a_panel_t = [&](int64_t t) {
      for (int64_t kb = 0; kb < k_blocks; ++kb) {
        const int64_t p0 = kb * KC, kc = std::min<int64_t>(KC, K - p0);
        pack_a_panel<T, Acc>(packed_a + kb * a_block + t * kc * MR, MR, a,
                             mask, t * MR, p0, kc, row_sums);
      }
    };
    auto pack_b_panel_t = [&](int64_t kb, int64_t jp) {
      const int64_t p0 = kb * KC, kc = std::min<int64_t>(KC, K - p0);
      pack_b_panel<T, Acc>(packed_b + kb * b_block + jp * kc * NR, NR, b, p0,
                           kc, jp * NR);
    };

    // Tasks are (row block, column chunk) pairs: enough to keep every thread
    // busy, each owning its part of C across the whole reduction.
    const int64_t m_blocks = (a_panels + MC_PANELS - 1) / MC_PANELS;
    const int64_t want_tasks = serial ? 1 : 4 * at::get_num_threads();
    int64_t chunk_panels = b_panels;
    if (m_blocks < want_tasks) {
      const int64_t chunks = (want_tasks + m_blocks - 1) / m_blocks;
      chunk_panels = std::max<int64_t>(1, (b_panels + chunks - 1) / chunks);
    }
    const int64_t n_chunks = (b_panels + chunk_panels - 1) / chunk_panels;

    // With one row block (few rows: A is small), each column chunk has one
    // task, which packs its own B panels just before using them: one
    // parallel region instead of two, and the panels are still in cache.
    // Otherwise everything is packed first, panel by panel, in parallel.
    const bool b_packed_by_task = m_blocks == 1;
    if (b_packed_by_task) {
      for (int64_t t = 0; t < a_panels; ++t) pack_a_panel_t(t);
    } else {
      maybe_parallel(serial, a_panels + k_blocks * b_panels, [&](int64_t begin, int64_t end) {
        for (int64_t t = begin; t < end; ++t) {
          if (t < a_panels) {
            pack_a_panel_t(t);
          } else {
            pack_b_panel_t((t - a_panels) / b_panels, (t - a_panels) % b_panels);
          }
        }
      });
    }

    maybe_parallel(serial, m_blocks * n_chunks, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t mb = t / n_chunks, chunk = t % n_chunks;
        const int64_t ip0 = mb * MC_PANELS, ip1 = std::min(a_panels, ip0 + MC_PANELS);
        const int64_t jp0 = chunk * chunk_panels, jp1 = std::min(b_panels, jp0 + chunk_panels);
        if (b_packed_by_task) {
          for (int64_t kb = 0; kb < k_blocks; ++kb)
            for (int64_t jp = jp0; jp < jp1; ++jp) pack_b_panel_t(kb, jp);
        }
        for (int64_t kb = 0; kb < k_blocks; ++kb) {
          const int64_t kc = std::min<int64_t>(KC, K - kb * KC);
          const bool first = kb == 0, last = kb == k_blocks - 1;
          const Acc* ablock = packed_a + kb * a_block;
          const Acc* bblock = packed_b + kb * b_block;
          for (int64_t jp = jp0; jp < jp1; ++jp) {
            const int64_t j = jp * NR;
            const int nr = static_cast<int>(std::min<int64_t>(NR, N - j));
            const Acc* bias = (last && epilogue.bias) ? epilogue.bias + j : nullptr;
            for (int64_t ip = ip0; ip < ip1; ++ip) {
              const int64_t i = ip * MR;
              const int mr = static_cast<int>(std::min<int64_t>(MR, M - i));
              kernel.fn(kc, ablock + ip * kc * MR, bblock + jp * kc * NR,
                        cacc + i * ldacc + j, ldacc, mr, nr, !first, bias,
                        last && epilogue.relu);
            }
          }
        }
      }
    });
  }

  if constexpr (!direct) {
    maybe_parallel(M * N <= kSerialWork, M, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        for (int64_t j = 0; j < N; ++j)
          c[i * ldc + j] = static_cast<T>(cacc[i * ldacc + j]);
    });
  }
}

// A 2-D tensor as the GEMM reads it.
template <typename T>
MatrixView<T> view_of(const at::Tensor& m) {
  return {m.const_data_ptr<T>(), m.size(0), m.size(1), m.stride(0),
          m.stride(1)};
}

// The bias as the GEMM epilogue reads it: contiguous, in the accumulation
// type. Points into the tensor itself when it already is; else into `copy`.
template <typename T, typename Acc>
const Acc* bias_in_acc(const at::Tensor& bias, std::vector<Acc>& copy) {
  const T* src = bias.const_data_ptr<T>();
  const int64_t n = bias.size(0), stride = bias.stride(0);
  if constexpr (std::is_same_v<T, Acc>) {
    if (stride == 1) return src;
  }
  copy.resize(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) copy[j] = static_cast<Acc>(src[j * stride]);
  return copy.data();
}

}  // namespace cpu
}  // namespace fastlayers
