// Which matrix product the CUDA ops run: fastlayers' own kernels
// (common/cuda_gemm.h) or the vendor's (cuBLAS/cuBLASLt through ATen, with
// the bias epilogue; the ReLU after it, as cuBLASLt's fused one drops NaN). It picks for linear_relu's
// forward and backward and for FixedHiddenMLP's multi-kernel path (its
// single-launch kernels for small shapes are whole-op kernels, not a GEMM
// choice). The policy is process-wide, set through the op
// fastlayers::set_cuda_gemm_policy (Python: fastlayers.backends.cuda_gemm).
//
//   auto (default): the vendor for products of at least kVendorMinMacs
//       multiply-adds for their dtype, direction and (half precision) the
//       operands' layout, fastlayers' below;
//   the vendor follows torch.backends.cuda.matmul's settings (TF32,
//   reduced-precision reductions), as nn.Linear does;
//   fastlayers / vendor: always that one (benchmarks measure both this way).
#pragma once

#include <atomic>
#include <cstdint>

#include <c10/core/ScalarType.h>

#include "cpu_features.h"

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
// With split-K for float32 (on the H200, benchmarks/results/gpu_h200/gemm_crossover.txt):
//   float32 both ways: won at 2^25 (2.0x forward, 1.6x backward), lost at
//       2^27 (0.6x, 0.7x); without split-K the H200 agrees with the H100
//       (won at 2^21, lost at 2^23).
// Half precision with operands in the vector kernels' layouts (16-byte
// aligned rows with a unit stride; the forward's x and weight contiguous along
// k) and the tensor-core backward on, on the H200 (gemm_crossover.txt,
// "own" = the default kernels, against the vendor):
//   bfloat16 forward: won at 2^27 (1.66x), lost at 2^29 (0.75x);
//   bfloat16 backward: won at 2^25 (1.54x), even at 2^27 (0.96x), lost at
//       2^29 (0.67x).
// Other layouts run the elementwise kernels (3% of the vendor in the
// backward), for which the H100's crossovers above stand.
constexpr int64_t kVendorMinMacsHalfForward = int64_t(1) << 25;
constexpr int64_t kVendorMinMacsHalfBackward = int64_t(1) << 20;
constexpr int64_t kVendorMinMacsHalfForwardVector = int64_t(1) << 28;
constexpr int64_t kVendorMinMacsHalfBackwardVector = int64_t(1) << 26;
constexpr int64_t kVendorMinMacsFloat = int64_t(1) << 22;
constexpr int64_t kVendorMinMacsFloatSplitK = int64_t(1) << 26;

inline std::atomic<int64_t>& cuda_gemm_policy() {
  static std::atomic<int64_t> policy{static_cast<int64_t>(CudaGemmPolicy::Auto)};
  return policy;
}

// The switched CUDA kernels, checked under the CPU emulator
// (tests/test_cuda_emulated.py) and, since 2026-12-04, on an H200: set
// through fastlayers::set_cuda_experimental_kernels (Python:
// fastlayers.backends.cuda_experimental) or, at start-up, the environment
// variable FASTLAYERS_CUDA_EXPERIMENTAL (comma-separated names, "all" or
// "none"). On by default (kDefaultCudaKernels), each measured faster on the
// H200 than the kernel it replaces (benchmarks/NOTES.md): the three that run
// only on products large enough to fill the GPU, and split-K for float32
// (faster or even at every size of the crossover sweep, 2^16 to 2^29
// multiply-adds). Off by default: split-K for the other dtypes and wgmma on
// products too small for the wide tiles (every switch on lost to the
// defaults in bfloat16 below 2^25: an extra launch, the tensor maps' host
// set-up), until a size threshold is measured.
//   split_k: products whose output tiles leave SMs idle reduce over slices
//       of k in separate blocks, then add the slices up in a fixed order;
//   split_k_float32: the same for float32 products only;
//   tensor_core_backward: half-precision products with a mask or with an
//       operand contiguous along m or n (the backward's) on tensor cores,
//       read in 16-byte vectors and fed to mma through ldmatrix(.trans);
//   float_warp_tiled: float32 products large enough for the 128x128 kernel
//       on a warp-tiled layout that reads every operand in 16-byte vectors;
//   wgmma: half-precision products (forward and backward) on Hopper's
//       warpgroup MMA fed by the TMA, where the build carries sm_90a code
//       (TORCH_CUDA_ARCH_LIST with 9.0a);
//   wgmma_wide: the same with 128x256 output tiles, where they fill the GPU
//       (on its own: only there);
//   float_warp_pipelined: the warp-tiled float32 kernel (where
//       float_warp_tiled runs) with each step's k's unrolled and the next
//       k's fragments read into registers during this k's multiply-adds
//       (built and emulated; not yet run on a GPU).
enum CudaExperimental : int64_t {
  kSplitK = 1,
  kTensorCoreBackward = 2,
  kFloatWarpTiled = 4,
  kWgmma = 8,
  kWgmmaWide = 16,
  kSplitKFloat32 = 32,
  kFloatWarpPipelined = 64,
  kAllCudaExperimental = 127,
  kDefaultCudaKernels = kTensorCoreBackward | kFloatWarpTiled | kWgmmaWide | kSplitKFloat32
};
constexpr const char* kCudaExperimentalNames[] = {"split_k",    "tensor_core_backward", "float_warp_tiled",    "wgmma",
                                                  "wgmma_wide", "split_k_float32",      "float_warp_pipelined"};

int64_t cuda_experimental_from_environment();  // registration.cpp

inline std::atomic<int64_t>& cuda_experimental_kernels() {
  static std::atomic<int64_t> flags{cuda_experimental_from_environment()};
  return flags;
}

// Whether any of the switched kernels in `kernels` (bits of CudaExperimental) is on.
inline bool cuda_experimental(int64_t kernels) {
  return (cuda_experimental_kernels().load(std::memory_order_relaxed) & kernels) != 0;
}

// Whether split-K serves products of this dtype (the routing threshold and
// the launcher both ask, so they cannot disagree).
inline bool cuda_split_k_on(c10::ScalarType dtype) {
  return cuda_experimental(kSplitK) || (dtype == c10::ScalarType::Float && cuda_experimental(kSplitKFloat32));
}

// `vector_operands`: whether the product's operands are in the vector
// kernels' layouts (cuda::half_vector_operands); it matters for half precision only.
inline bool use_vendor_gemm(GemmPass pass, c10::ScalarType dtype, int64_t m, int64_t n, int64_t k,
                            bool vector_operands) {
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
      const bool float_split = dtype == c10::ScalarType::Float && cuda_split_k_on(dtype);
      const bool forward = pass == GemmPass::Forward;
      // The backward's fast kernels are a switch (on by default).
      const bool vector = vector_operands && (forward || cuda_experimental(kTensorCoreBackward));
      const int64_t min_macs = float_split ? kVendorMinMacsFloatSplitK
                               : !half     ? kVendorMinMacsFloat
                               : forward   ? (vector ? kVendorMinMacsHalfForwardVector : kVendorMinMacsHalfForward)
                                           : (vector ? kVendorMinMacsHalfBackwardVector : kVendorMinMacsHalfBackward);
      return m * n * k >= min_macs;
    }
  }
}

// The CPU side: fastlayers' kernels (common/cpu_gemm.h) or the vendor's
// (oneDNN's fused linear+ReLU, mkldnn::_linear_pointwise, where the torch
// build has it; MKL/oneDNN through at::addmm / at::mm otherwise). Set through
// fastlayers::set_cpu_gemm_policy (Python: fastlayers.backends.cpu_gemm).
// The auto policy's crossovers depend on the instruction set: they were
// measured per rung with benchmarks/bench_gemm_crossover.py --device cpu
// (benchmarks/results/<machine class>/gemm_crossover.txt name the CPUs).
enum class CpuGemmPolicy : int64_t { Auto = 0, Fastlayers = 1, Vendor = 2 };

inline std::atomic<int64_t>& cpu_gemm_policy() {
  static std::atomic<int64_t> policy{static_cast<int64_t>(CpuGemmPolicy::Auto)};
  return policy;
}

// The products (in multiply-adds) the auto policy sends to the vendor, per
// dtype class and pass: those in [from, below). kNever as `from` keeps the
// class on fastlayers' kernels; as `below`, the vendor takes every larger one.
constexpr int64_t kNever = INT64_MAX;
struct VendorBand {
  int64_t from, below = kNever;
  bool contains(int64_t macs) const { return macs >= from && macs < below; }
};
struct CpuCrossover {
  VendorBand float_forward, float_backward, half_forward, half_backward;
};

// AVX-512 rungs on a CPU with AVX512-BF16 (oneDNN's bfloat16 products run
// on vdpbf16ps or the tile unit): measured on a 2-core AMD EPYC (Zen 4: AVX-512 with
// AVX512-BF16, no AMX, 32 KB L1d; benchmarks/results/cpu_avx512_bf16_zen4/gemm_crossover.txt,
// three runs), sweep steps of 2^2-2^3, fastlayers ÷ vendor:
//   float32 forward: 1.00-1.08x at 2^22 (one run 0.73x), 0.87-0.98x from 2^24;
//   float32 backward: 0.87-1.16x at 2^19, 0.60-1.34x at 2^22-2^26, then
//       1.13-1.52x from 2^28 (the vendor masks the gradient in a pass of its
//       own, twice when both gradients are due; fastlayers while packing);
//   bfloat16 forward: 1.37-1.68x at 2^19, 0.73-1.04x at 2^22, 0.6-0.9x above;
//   bfloat16 backward: 1.23-2.36x at 2^19, 0.45-1.54x at 2^22, 0.47-0.89x above.
// The AMX rung uses the same table: on an Intel AMX CPU oneDNN's bfloat16
// products run on the tile unit and were faster still (3-7x fastlayers at
// 2^24 and up), so the vendor there from 2^21 is on the safe side.
constexpr CpuCrossover kCrossoverAvx512Bf16{
    {int64_t(1) << 23}, {int64_t(1) << 18, int64_t(1) << 27}, {int64_t(1) << 21}, {int64_t(1) << 20}};
// The same rungs on AMD's Zen 5 (full-width 512-bit FMA units where Zen 4
// double-pumps 256-bit ones; 48 KB L1d): measured on a 2-core AMD EPYC,
// family 0x1A (AVX-512 with AVX512-BF16, no AMX;
// benchmarks/results/cpu_avx512_bf16_zen5/gemm_crossover*.txt, three runs,
// with the word-transposing packing), fastlayers ÷ vendor:
//   float32 forward: 1.23-1.39x at 2^22, 0.96-1.04x at 2^24, 0.89-1.00x
//       at 2^26-2^30, 0.67-0.83x at 2^32;
//   float32 backward: 1.48-1.82x at 2^13-2^16, 1.40-3.27x from 2^19 to
//       2^32, so it never goes there;
//   bfloat16 forward: 0.98-2.11x at 2^22, 1.11-1.12x at 2^24, 0.78-1.11x
//       at 2^26-2^30 (one run 0.78x, the rest 0.98-1.11x), 0.90-1.02x at
//       2^32; timed with four rotating inputs, 0.96-1.00x at 2^26-2^30 and
//       0.87-0.95x forward+backward (its backward on the vendor), so the
//       vendor takes it from 2^25 as the float32 forward;
//   bfloat16 backward: 1.31-1.86x at 2^19, 0.60-1.33x at 2^22, 0.48-1.01x above.
constexpr CpuCrossover kCrossoverZen5{{int64_t(1) << 25}, {kNever}, {int64_t(1) << 25}, {int64_t(1) << 22}};
// AVX-512 without AVX512-BF16: measured on a 2-core Intel Xeon @ 2.80GHz
// (AVX-512 with VNNI, no AVX512-BF16, no AMX;
// benchmarks/results/cpu_avx512/gemm_crossover.txt, three runs):
//   float32 forward: 1.13-1.32x at 2^22, 0.60-0.98x from 2^24;
//   float32 backward: 0.94-1.07x at 2^19-2^22, 0.75-1.43x at 2^24, 0.59-0.88x from 2^26;
//   bfloat16 forward and backward: 1.07-4.67x everywhere, 1.8-2.9x from 2^28:
//       without bfloat16 instructions oneDNN's products are slower than
//       fastlayers' (operands widened to float32 while packing), so they never go there.
constexpr CpuCrossover kCrossoverAvx512{{int64_t(1) << 23}, {int64_t(1) << 23}, {kNever}, {kNever}};
// AVX2 and portable: fastlayers measured 1.5-1.8x eager on an AVX2-only AMD
// CPU in an earlier session, so no vendor route there until one is measured.
// The table follows the rung fastlayers runs, the CPU's bfloat16
// instructions, which the vendor uses whatever rung fastlayers is capped to,
// and the core where one was measured apart.
inline CpuCrossover cpu_crossover(cpu::Isa active, cpu::Isa best, cpu::Core core) {
  // The AVX-512 rungs (amx_emulated included) on an AVX-512 CPU.
  if (active < cpu::Isa::Avx512 || best < cpu::Isa::Avx512) return {{kNever}, {kNever}, {kNever}, {kNever}};
  if (best < cpu::Isa::Avx512Bf16) return kCrossoverAvx512;
  return core == cpu::Core::Zen5 ? kCrossoverZen5 : kCrossoverAvx512Bf16;
}

inline bool use_vendor_cpu_gemm(GemmPass pass, c10::ScalarType dtype, int64_t m, int64_t n, int64_t k) {
  if (k == 0) return false;  // an empty reduction is only the bias: nothing to win
  switch (static_cast<CpuGemmPolicy>(cpu_gemm_policy().load(std::memory_order_relaxed))) {
    case CpuGemmPolicy::Fastlayers:
      return false;
    case CpuGemmPolicy::Vendor:
      return true;
    default: {
      if (dtype == c10::ScalarType::Double) return false;  // oneDNN has no float64 product to offer
      const CpuCrossover c = cpu_crossover(cpu::active_isa(), cpu::best_isa(), cpu::core());
      const bool half = dtype == c10::ScalarType::Half || dtype == c10::ScalarType::BFloat16;
      const VendorBand band = half ? (pass == GemmPass::Forward ? c.half_forward : c.half_backward)
                                   : (pass == GemmPass::Forward ? c.float_forward : c.float_backward);
      return band.contains(m * n * k);
    }
  }
}

}  // namespace fastlayers
