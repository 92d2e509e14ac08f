// The AMX-BF16 kernel (cpu_gemm_amx.inl) on the real tile unit. Reached only
// when the CPU has AMX-BF16, the OS granted the tile state
// (cpu_features.cpp), and the AMX rung was chosen (it is opt-in: see
// cpu_features.h).
#include <cstdint>

#include "cpu_gemm_kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && (__GNUC__ >= 11 || defined(__clang__))
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq")

namespace fastlayers {
namespace cpu {
namespace amx {
namespace {

#define TILE_LOADCONFIG(cfg) _tile_loadconfig(cfg)
#define TILE_ZERO(t) _tile_zero(t)
#define TILE_LOAD(t, ptr, stride) _tile_loadd(t, ptr, stride)
#define TILE_STORE(t, ptr, stride) _tile_stored(t, ptr, stride)
#define TILE_DPBF16PS(c, a, b) _tile_dpbf16ps(c, a, b)
#include "cpu_gemm_amx.inl"

}  // namespace

TileKernel<float, Bf16Bits> bf16_kernel() { return amx_kernel(); }

}  // namespace amx
}  // namespace cpu
}  // namespace fastlayers

#pragma GCC pop_options

#else
namespace fastlayers::cpu::amx {
TileKernel<float, Bf16Bits> bf16_kernel() { return {}; }
}  // namespace fastlayers::cpu::amx
#endif
