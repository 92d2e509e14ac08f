// The contract between the CPU GEMM driver (cpu_gemm.cpp: blocking, packing,
// threads) and the per-instruction-set kernels (cpu_gemm_<isa>.cpp, each
// compiled for its own instruction set and reached only when the CPU has it).
//
// A tile kernel computes one MR x NR block of C from a packed A panel (kc x
// MR) and a packed B panel (kc x NR), kc padded with zeros to `k_align`:
//   C[0:mr, 0:nr] (+)= A_panel^T B_panel, then + bias[0:nr] and ReLU when
//   `bias` / `relu` are given (the driver passes them on the last k block).
// `accumulate` adds to what C holds; mr <= MR and nr <= NR clip the store.
#pragma once

#include <cstdint>

#include "cpu_features.h"

namespace fastlayers {
namespace cpu {

// Where element (p, r) of a packed panel of width w (MR or NR) lives.
enum class Layout {
  KMajor,    // p * w + r: one k step is one contiguous row (FMA kernels)
  KPairs,    // ((p / 2) * w + r) * 2 + p % 2: k pairs side by side (vdpbf16ps; AMX's B)
  RowMajor,  // r * kc + p: each row contiguous (AMX's A)
};

template <typename Acc, typename P>
using TileFn = void (*)(int64_t kc, const P* a, const P* b, Acc* c, int64_t ldc, int mr, int nr, bool accumulate,
                        const Acc* bias, bool relu);

template <typename Acc, typename P>
struct TileKernel {
  int mr = 0, nr = 0, k_align = 1;
  Layout a_layout = Layout::KMajor, b_layout = Layout::KMajor;
  TileFn<Acc, P> fn = nullptr;  // null: the ISA has no such kernel
};

// c[i, j] = epilogue(sum_p a[i * lda + p] * b[j * ldb + p]) for i < m <= 4,
// j in [j0, j1): a few rows against a linear layer's weight, unpacked.
template <typename Acc>
using SmallRowsDotFn = void (*)(const Acc* a, int64_t lda, int64_t m, const Acc* b, int64_t ldb, int64_t k, int64_t j0,
                                int64_t j1, Acc* c, int64_t ldc, const Acc* bias, bool relu);
// The same with B's rows contiguous (b[p * ldb + j]), j < n.
template <typename Acc>
using SmallRowsAxpyFn = void (*)(const Acc* a, int64_t lda, int64_t m, const Acc* b, int64_t ldb, int64_t k, int64_t n,
                                 Acc* c, int64_t ldc, const Acc* bias, bool relu);

template <typename Acc>
struct KernelSet {
  TileKernel<Acc, Acc> tile;
  SmallRowsDotFn<Acc> small_rows_dot = nullptr;
  SmallRowsAxpyFn<Acc> small_rows_axpy = nullptr;
  // dst[c * ldd + r] = src[r * lds + c] for an 8 x 8 block (packing a
  // weight read transposed); null where there is no fast one.
  void (*transpose_8x8)(const Acc* src, int64_t lds, Acc* dst, int64_t ldd) = nullptr;
};

// bfloat16 operands as their 16 bits.
using Bf16Bits = uint16_t;

// Float results rounded to bfloat16 (nearest even), n of them; the fastest
// this CPU has.
using ToBf16Fn = void (*)(const float* src, Bf16Bits* dst, int64_t n);
ToBf16Fn to_bf16_rows(Isa isa);
namespace avx512_bf16 {
void to_bf16(const float* src, Bf16Bits* dst, int64_t n);
}  // namespace avx512_bf16

// Kernels of one instruction set (portable for every ISA without its own).
KernelSet<float> float_kernels(Isa isa);
KernelSet<double> double_kernels(Isa isa);
// bfloat16 products with float accumulators, where the ISA multiplies
// bfloat16 directly (avx512_bf16, amx, amx_emulated); fn is null elsewhere.
TileKernel<float, Bf16Bits> bf16_kernel(Isa isa);

// Each unit's own table (defined in cpu_gemm_<isa>.cpp).
namespace portable {
KernelSet<float> float_kernels();
KernelSet<double> double_kernels();
}  // namespace portable
namespace avx2 {
KernelSet<float> float_kernels();
KernelSet<double> double_kernels();
void transpose_8x8(const float* src, int64_t lds, float* dst, int64_t ldd);
}  // namespace avx2
namespace avx512 {
KernelSet<float> float_kernels();
KernelSet<double> double_kernels();
}  // namespace avx512
namespace avx512_bf16 {
TileKernel<float, Bf16Bits> bf16_kernel();
}  // namespace avx512_bf16
namespace amx {
TileKernel<float, Bf16Bits> bf16_kernel();
}  // namespace amx
namespace amx_emulated {
TileKernel<float, Bf16Bits> bf16_kernel();
}  // namespace amx_emulated

}  // namespace cpu
}  // namespace fastlayers
