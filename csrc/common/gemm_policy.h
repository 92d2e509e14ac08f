// Which matrix product the CUDA ops run: fastlayers' own kernels
// (common/cuda_gemm.cuh) or the vendor's (cuBLAS/cuBLASLt through ATen, with
// the bias+ReLU epilogue where there is one). It picks for linear_relu's
// forward and backward and for FixedHiddenMLP's multi-kernel path (its
// single-launch kernels for small shapes are whole-op kernels, not a GEMM
// choice). The policy is process-wide, set through the op
// fastlayers::set_cuda_gemm_policy (Python: fastlayers.backends.cuda_gemm).
//
//   auto (default): the vendor for products of at least kVendorMinMacs
//       multiply-adds for their dtype and direction, fastlayers' below;
//   the vendor follows torch.backends.cuda.matmul's settings (TF32,
//   reduced-precision reductions), as nn.Linear does;
//   fastlayers / vendor: always that one (benchmarks measure both this way).
#pragma once

#include <atomic>
#include <cstdint>

#include <c10/core/ScalarType.h>

namespace fastlayers {

enum class CudaGemmPolicy : int64_t { Auto = 0, Fastlayers = 1, Vendor = 2 };

// Which side of the model a product is on: the backward's products read the
// ReLU mask and transposed operands, where fastlayers' kernels are slower.
enum class GemmPass { Forward, Backward };

// The crossovers of the auto policy, read off benchmarks/bench_gemm_crossover.py
// on an H100 (benchmarks/results/h100_gemm_crossover.txt): fastlayers' kernels
// won up to the last size below each constant and lost from the first size
// at or above it (the sweep steps by 4x).
//   float16/bfloat16 forward: won at 2^23 (1.35x), lost at 2^25 (0.84x);
//   float16/bfloat16 backward: won at 2^19, lost at 2^21 (0.79x);
//   float32/float64 both ways: won at 2^21 (1.23x forward, 1.06x backward),
//       lost at 2^23 (0.73x, 0.59x).
constexpr int64_t kVendorMinMacsHalfForward = int64_t(1) << 25;
constexpr int64_t kVendorMinMacsHalfBackward = int64_t(1) << 20;
constexpr int64_t kVendorMinMacsFloat = int64_t(1) << 22;

inline std::atomic<int64_t>& cuda_gemm_policy() {
  static std::atomic<int64_t> policy{static_cast<int64_t>(CudaGemmPolicy::Auto)};
  return policy;
}

inline bool use_vendor_gemm(GemmPass pass, c10::ScalarType dtype, int64_t m, int64_t n, int64_t k) {
  // An empty reduction stays here: ATen's CUDA addmm then returns the bias
  // without applying the activation.
  if (k == 0) return false;
  switch (static_cast<CudaGemmPolicy>(cuda_gemm_policy().load(std::memory_order_relaxed))) {
    case CudaGemmPolicy::Fastlayers:
      return false;
    case CudaGemmPolicy::Vendor:
      return true;
    default: {
      const bool half = dtype == c10::ScalarType::Half || dtype == c10::ScalarType::BFloat16;
      const int64_t min_macs = !half                        ? kVendorMinMacsFloat
                               : pass == GemmPass::Forward ? kVendorMinMacsHalfForward
                                                            : kVendorMinMacsHalfBackward;
      return m * n * k >= min_macs;
    }
  }
}

}  // namespace fastlayers
