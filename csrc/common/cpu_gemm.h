// The CPU matrix product every fastlayers op builds on: the interface. The
// driver (blocking, packing, threads) is compiled once in cpu_gemm.cpp, the
// kernels once per instruction set in cpu_gemm_<isa>.cpp (contract in
// cpu_gemm_kernels.h), the instruction set chosen at run time
// (cpu_features.h).
//
//   C[M,N] = epilogue( sum_p A(i,p) * B(p,j) )
//
// A and B are read through strides, so transposed, sliced and expanded
// tensors need no copy: packing reads them once per block anyway. Packing
// also converts them to what the kernel multiplies (float for half
// precision on FMA kernels; bfloat16 stays bfloat16 where the CPU multiplies
// it directly) and can multiply A by a ReLU mask taken from another strided
// matrix, `(mask(i,p) > 0)`. The epilogue adds a per-column bias and applies
// ReLU when the last block of the reduction is stored. Optionally the row
// sums of the (masked) A are produced in the same pass: that is the bias
// gradient of a linear layer.
//
// Each thread owns one rectangle of an even grid over C's tiles across the
// whole reduction, so results do not depend on the number of threads. Up to 4 rows of A skip packing (dot-product and
// axpy paths).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu_parallel.h"

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

// C (M x N, row stride ldc, type T) = epilogue(A_masked @ B), accumulated in
// Acc (float for half precision). `row_sums` (length M), if given, receives
// the row sums of the masked A. `mask`, if given, has A's shape.
// Instantiated for (float, float), (double, double), (Half, float),
// (BFloat16, float).
template <typename T, typename Acc>
void gemm(const MatrixView<T>& a, const MatrixView<T>* mask, const MatrixView<T>& b, T* c, int64_t ldc,
          Epilogue<Acc> epilogue, Acc* row_sums);

// row_sums[i] = sum_p A(i,p) * (mask(i,p) > 0): the bias gradient when no
// product carries it (no weight gradient, or no weight columns).
template <typename T, typename Acc>
void masked_row_sums(const MatrixView<T>& a, const MatrixView<T>* mask, Acc* row_sums);

// A 2-D tensor as the GEMM reads it.
template <typename T>
MatrixView<T> view_of(const at::Tensor& m) {
  return {m.const_data_ptr<T>(), m.size(0), m.size(1), m.stride(0), m.stride(1)};
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
