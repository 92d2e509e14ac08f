// Which matrix product the CUDA linear_relu ops run: fastlayers' own kernels
// (common/cuda_gemm.cuh) or the vendor's (cuBLASLt's bias+ReLU epilogue
// through ATen). The policy is process-wide, set through the op
// fastlayers::set_cuda_gemm_policy (Python: fastlayers.backends.cuda_gemm).
//
//   auto (default): the vendor for products of at least kVendorMinMacs
//       multiply-adds, fastlayers' kernels below;
//   the vendor follows torch.backends.cuda.matmul's settings (TF32,
//   reduced-precision reductions), as nn.Linear does;
//   fastlayers / vendor: always that one (benchmarks measure both this way).
#pragma once

#include <atomic>
#include <cstdint>

namespace fastlayers {

enum class CudaGemmPolicy : int64_t { Auto = 0, Fastlayers = 1, Vendor = 2 };

// The crossover of the auto policy. Not yet measured on a GPU: a first
// estimate from the kernels' expected throughput (benchmarks/NOTES.md).
constexpr int64_t kVendorMinMacs = int64_t(1) << 27;

inline std::atomic<int64_t>& cuda_gemm_policy() {
  static std::atomic<int64_t> policy{static_cast<int64_t>(CudaGemmPolicy::Auto)};
  return policy;
}

inline bool use_vendor_gemm(int64_t m, int64_t n, int64_t k) {
  // An empty reduction stays here: ATen's CUDA addmm then returns the bias
  // without applying the activation.
  if (k == 0) return false;
  switch (static_cast<CudaGemmPolicy>(cuda_gemm_policy().load(std::memory_order_relaxed))) {
    case CudaGemmPolicy::Fastlayers:
      return false;
    case CudaGemmPolicy::Vendor:
      return true;
    default:
      return m * n * k >= kVendorMinMacs;
  }
}

}  // namespace fastlayers
