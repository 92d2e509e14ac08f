// AVX-512 kernels (512-bit vectors, 32 registers): 12 x 32 floats or 12 x 16
// doubles, 24 accumulators + 2 B vectors + broadcasts; edges through lane
// masks. See cpu_gemm_kernels.h.
#include <algorithm>
#include <cstdint>

#include "cpu_gemm_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma")

namespace fastlayers {
namespace cpu {
namespace avx512 {
namespace {

#include "cpu_gemm_avx512_traits.inl"
#include "cpu_gemm_microkernels.inl"

}  // namespace

KernelSet<float> float_kernels() { return kernel_set<Avx512Float, 12, 2>(); }
KernelSet<double> double_kernels() { return kernel_set<Avx512Double, 12, 2>(); }

}  // namespace avx512
}  // namespace cpu
}  // namespace fastlayers

#pragma GCC pop_options

#else
namespace fastlayers::cpu::avx512 {
KernelSet<float> float_kernels() { return portable::float_kernels(); }
KernelSet<double> double_kernels() { return portable::double_kernels(); }
}  // namespace fastlayers::cpu::avx512
#endif
