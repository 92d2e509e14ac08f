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
// Blocking follows the usual packed-GEMM recipe: B is packed once into
// KC x NR panels, each task packs an MC x KC block of A into MR x KC panels
// and runs an MR x NR register-blocked micro-kernel over them. The micro-
// kernel uses AVX2+FMA when the processor has it (checked at run time) and a
// portable loop otherwise. Work is split over (row block, column chunk)
// tasks; a task owns its part of C across the whole reduction, so results do
// not depend on the number of threads.
#pragma once

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
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

// Register-block shape per accumulation type: MR rows x NR columns of C.
template <typename Acc>
struct Blocking;
template <>
struct Blocking<float> {
  static constexpr int MR = 6, NR = 16, KC = 256, MC = 96;
};
template <>
struct Blocking<double> {
  static constexpr int MR = 6, NR = 8, KC = 256, MC = 48;
};

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

template <typename Acc>
void micro_kernel_portable(int64_t kc, const Acc* a, const Acc* b, Acc* c,
                           int64_t ldc, int mr, int nr, bool accumulate,
                           const Acc* bias, bool relu) {
  constexpr int MR = Blocking<Acc>::MR, NR = Blocking<Acc>::NR;
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

inline bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") &&
                          __builtin_cpu_supports("fma");
  return has;
}
#endif

template <typename Acc>
MicroKernel<Acc> select_micro_kernel() {
#ifdef FASTLAYERS_X86
  if (cpu_has_avx2_fma()) {
    return static_cast<MicroKernel<Acc>>(&micro_kernel_avx2);
  }
#endif
  return &micro_kernel_portable<Acc>;
}

template <typename T>
inline bool relu_mask_on(T v) {
  return static_cast<float>(v) > 0.f;
}
inline bool relu_mask_on(double v) { return v > 0.0; }

// Packs rows [i0, i0+mc) x columns [p0, p0+kc) of A into MR-row panels
// (p-major inside a panel), zero-padding the last panel. Applies the mask
// and, if `row_sums` is given, adds each packed row's sum to it.
template <typename T, typename Acc>
void pack_a(Acc* dst, const MatrixView<T>& a, const MatrixView<T>* mask,
            int64_t i0, int64_t mc, int64_t p0, int64_t kc, Acc* row_sums) {
  constexpr int MR = Blocking<Acc>::MR;
  for (int64_t ir = 0; ir < mc; ir += MR) {
    const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
    for (int r = 0; r < MR; ++r) {
      Acc* out = dst + r;
      if (r >= mr) {
        for (int64_t p = 0; p < kc; ++p) out[p * MR] = Acc(0);
        continue;
      }
      const int64_t i = i0 + ir + r;
      const T* src = a.data + i * a.rs + p0 * a.cs;
      Acc sum = Acc(0);
      if (mask) {
        const T* m = mask->data + i * mask->rs + p0 * mask->cs;
        for (int64_t p = 0; p < kc; ++p) {
          const Acc v = relu_mask_on(m[p * mask->cs])
                            ? static_cast<Acc>(src[p * a.cs])
                            : Acc(0);
          out[p * MR] = v;
          sum += v;
        }
      } else {
        for (int64_t p = 0; p < kc; ++p) {
          const Acc v = static_cast<Acc>(src[p * a.cs]);
          out[p * MR] = v;
          sum += v;
        }
      }
      if (row_sums) row_sums[i] += sum;
    }
    dst += MR * kc;
  }
}

// Packs one NR-column panel of B: rows [p0, p0+kc), columns [j0, j0+NR),
// zero-padded past the last column.
template <typename T, typename Acc>
void pack_b_panel(Acc* dst, const MatrixView<T>& b, int64_t p0, int64_t kc,
                  int64_t j0) {
  constexpr int NR = Blocking<Acc>::NR;
  const int nr = static_cast<int>(std::min<int64_t>(NR, b.cols - j0));
  for (int j = 0; j < NR; ++j) {
    Acc* out = dst + j;
    if (j >= nr) {
      for (int64_t p = 0; p < kc; ++p) out[p * NR] = Acc(0);
      continue;
    }
    const T* src = b.data + p0 * b.rs + (j0 + j) * b.cs;
    for (int64_t p = 0; p < kc; ++p) out[p * NR] = static_cast<Acc>(src[p * b.rs]);
  }
}

// Below this many multiply-adds a product runs on the calling thread: waking
// the pool costs more than the work.
constexpr int64_t kSerialWork = int64_t(1) << 17;

// C (M x N, row stride ldc, type T) = epilogue(A_masked @ B).
// `row_sums` (length M, type Acc), if given, receives the row sums of the
// masked A. `mask`, if given, has A's shape.
template <typename T, typename Acc>
void gemm(const MatrixView<T>& a, const MatrixView<T>* mask,
          const MatrixView<T>& b, T* c, int64_t ldc, Epilogue<Acc> epilogue,
          Acc* row_sums) {
  using B = Blocking<Acc>;
  constexpr int MR = B::MR, NR = B::NR;
  const int64_t M = a.rows, K = a.cols, N = b.cols;
  if (M == 0 || N == 0) {
    if (row_sums) std::fill(row_sums, row_sums + M, Acc(0));
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

  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        Acc v = epilogue.bias ? epilogue.bias[j] : Acc(0);
        if (epilogue.relu && v < Acc(0)) v = Acc(0);
        cacc[i * ldacc + j] = v;
      }
    if (row_sums) std::fill(row_sums, row_sums + M, Acc(0));
  } else {
    const MicroKernel<Acc> kernel = select_micro_kernel<Acc>();
    const int64_t kc_max = std::min<int64_t>(B::KC, K);
    const int64_t k_blocks = (K + B::KC - 1) / B::KC;
    const int64_t n_panels = (N + NR - 1) / NR;
    const int64_t m_blocks = (M + B::MC - 1) / B::MC;
    const bool serial = M * N * K <= kSerialWork || at::get_num_threads() == 1;

    // Pack all of B: k-block kb holds n_panels panels of kc x NR.
    std::unique_ptr<Acc[]> packed_b(new Acc[k_blocks * kc_max * n_panels * NR]);
    auto pack_b_range = [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        const int64_t kb = t / n_panels, jp = t % n_panels;
        const int64_t p0 = kb * B::KC, kc = std::min<int64_t>(B::KC, K - p0);
        pack_b_panel<T, Acc>(
            packed_b.get() + kb * kc_max * n_panels * NR + jp * kc * NR, b, p0,
            kc, jp * NR);
      }
    };
    if (serial) {
      pack_b_range(0, k_blocks * n_panels);
    } else {
      at::parallel_for(0, k_blocks * n_panels, 1, pack_b_range);
    }

    // Column chunks: enough tasks to keep every thread busy, but at least
    // four panels each so re-packing A stays cheap next to the math.
    const int64_t want_tasks = serial ? 1 : 4 * at::get_num_threads();
    int64_t chunk_panels = n_panels;
    if (m_blocks < want_tasks) {
      const int64_t chunks = (want_tasks + m_blocks - 1) / m_blocks;
      chunk_panels = std::max<int64_t>(4, (n_panels + chunks - 1) / chunks);
    }
    const int64_t n_chunks = (n_panels + chunk_panels - 1) / chunk_panels;

    auto run_tasks = [&](int64_t begin, int64_t end) {
      std::unique_ptr<Acc[]> packed_a(new Acc[B::MC * kc_max]);
      for (int64_t t = begin; t < end; ++t) {
        const int64_t mb = t / n_chunks, chunk = t % n_chunks;
        const int64_t i0 = mb * B::MC, mc = std::min<int64_t>(B::MC, M - i0);
        const int64_t jp0 = chunk * chunk_panels;
        const int64_t jp1 = std::min(n_panels, jp0 + chunk_panels);
        // Only the first chunk of a row block reports row sums: each row is
        // then summed exactly once, by one task, in a fixed order.
        Acc* sums = (row_sums && chunk == 0) ? row_sums : nullptr;
        if (sums) std::fill(sums + i0, sums + i0 + mc, Acc(0));
        for (int64_t kb = 0; kb < k_blocks; ++kb) {
          const int64_t p0 = kb * B::KC, kc = std::min<int64_t>(B::KC, K - p0);
          const bool first = kb == 0, last = kb == k_blocks - 1;
          pack_a<T, Acc>(packed_a.get(), a, mask, i0, mc, p0, kc, sums);
          const Acc* bblock = packed_b.get() + kb * kc_max * n_panels * NR;
          for (int64_t jp = jp0; jp < jp1; ++jp) {
            const int64_t j = jp * NR;
            const int nr = static_cast<int>(std::min<int64_t>(NR, N - j));
            const Acc* bias =
                (last && epilogue.bias) ? epilogue.bias + j : nullptr;
            for (int64_t ir = 0; ir < mc; ir += MR) {
              const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
              kernel(kc, packed_a.get() + ir * kc, bblock + jp * kc * NR,
                     cacc + (i0 + ir) * ldacc + j, ldacc, mr, nr, !first,
                     bias, last && epilogue.relu);
            }
          }
        }
      }
    };
    if (serial) {
      run_tasks(0, m_blocks * n_chunks);
    } else {
      at::parallel_for(0, m_blocks * n_chunks, 1, run_tasks);
    }
  }

  if constexpr (!direct) {
    auto convert = [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        for (int64_t j = 0; j < N; ++j)
          c[i * ldc + j] = static_cast<T>(cacc[i * ldacc + j]);
    };
    if (M * N <= kSerialWork) {
      convert(0, M);
    } else {
      at::parallel_for(0, M, std::max<int64_t>(1, kSerialWork / N), convert);
    }
  }
}

}  // namespace cpu
}  // namespace fastlayers
