// The CUDA matrix product the fastlayers ops build on: the interface (the
// kernels are compiled once, in cuda_gemm.cu). The same contract as
// common/cpu_gemm.h:
//
//   C[M,N] = epilogue( sum_p A(i,p) * B(p,j) ),   A's entries times (mask(i,p) > 0)
//
// with A, B and the mask read through strides (no copies of transposed or
// expanded tensors), accumulation in float for half/bfloat16 (double for
// double), a bias+ReLU epilogue, and optionally the row sums of the masked
// A (a linear layer's bias gradient), each written by exactly one block in a
// fixed order, so results are deterministic.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/TensorOptions.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <initializer_list>

namespace fastlayers {
namespace cuda {

template <typename T>
struct StridedMatrix {
  const T* data = nullptr;
  int64_t rs = 0, cs = 0;
  __device__ __forceinline__ T operator()(int64_t r, int64_t c) const { return data[r * rs + c * cs]; }
};

// A 2-D tensor, or its transpose, as the kernels read it.
template <typename T>
StridedMatrix<T> strided(const at::Tensor& m) {
  return {m.const_data_ptr<T>(), m.stride(0), m.stride(1)};
}
template <typename T>
StridedMatrix<T> strided_t(const at::Tensor& m) {
  return {m.const_data_ptr<T>(), m.stride(1), m.stride(0)};
}

template <typename T, typename Acc>
struct GemmArgs {
  StridedMatrix<T> a, mask, b;  // mask.data == nullptr: no mask
  T* c = nullptr;
  int64_t ldc = 0;
  int64_t M = 0, N = 0, K = 0;
  const T* bias = nullptr;  // per column, contiguous-or-strided below
  int64_t bias_stride = 1;
  bool relu = false;
  T* row_sums = nullptr;  // length M, or null

  // Set by gemm() itself when it splits the reduction (split-K): block z of
  // the launch reduces over k in [z k_slice, (z + 1) k_slice) and writes its
  // raw sums to partial[z][M][N] (row sums to partial_row_sums[z][M]); a
  // second kernel adds the slices up in order and applies the epilogue.
  Acc* partial = nullptr;
  Acc* partial_row_sums = nullptr;
  int64_t k_slice = 0;
};

// The ReLU mask every kernel applies: where the forward's output is > 0.
template <typename T>
__device__ __forceinline__ bool relu_mask_on(T v) {
  return static_cast<float>(v) > 0.f;
}
__device__ __forceinline__ bool relu_mask_on(double v) { return v > 0.0; }

// Launches the product on the current stream of the current device (the
// caller holds a device guard). `scratch` says where scratch space comes
// from (the caching allocator, on the output's device: pass the output's
// options); only split-K uses any. Instantiated in cuda_gemm.cu for (float,
// float), (double, double), (Half, float) and (BFloat16, float).
template <typename T, typename Acc>
void gemm(const GemmArgs<T, Acc>& g, const at::TensorOptions& scratch);

// Whether half-precision operands (2-D) are in the layouts the vector
// tensor-core kernels read, on a device that has tensor cores: each with
// 16-byte aligned data, a unit stride and rows of whole 16-byte vectors
// (an extent of 1 needs no row stride); with `along_last_dim`, each
// contiguous along its last dim (the forward's x and weight). The auto
// policy's raised half-precision crossovers hold there (gemm_policy.h).
bool half_vector_operands(std::initializer_list<at::Tensor> operands, bool along_last_dim);

extern template void gemm<float, float>(const GemmArgs<float, float>&, const at::TensorOptions&);
extern template void gemm<double, double>(const GemmArgs<double, double>&, const at::TensorOptions&);
extern template void gemm<c10::Half, float>(const GemmArgs<c10::Half, float>&, const at::TensorOptions&);
extern template void gemm<c10::BFloat16, float>(const GemmArgs<c10::BFloat16, float>&, const at::TensorOptions&);

}  // namespace cuda
}  // namespace fastlayers
