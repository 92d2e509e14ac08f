// What the processor offers the CPU kernels, found once per process, and
// which of it they may use. Every CPU kernel asks here; nothing else runs
// cpuid.
//
//   portable < avx2 (AVX2+FMA) < avx512 (F, BW, VL, DQ) < avx512_bf16 (+ vdpbf16ps)
//   < amx (AMX-TILE + AMX-BF16, and the OS granted the tile state)
//
// amx_emulated is not a rung: the AMX kernel's source compiled against a
// software tile unit, so its packing and tiling can be tested on any CPU. It
// runs only when forced, and only for bfloat16 products (float products use
// the best real rung).
//
// The ISA used is the best the CPU has, capped by set_cpu_isa() (Python:
// fastlayers.backends.cpu_isa) or, at start-up, by FASTLAYERS_CPU_ISA=<name>.
// AMX is opt-in (one of those two must name it): its kernel has run only on
// the software tile unit, never on an AMX CPU, so by default an AMX CPU
// runs the avx512_bf16 kernels.
// FASTLAYERS_CPU_AMX=0 leaves the tile unit alone (no permission request).
#pragma once

#include <cstdint>
#include <string>

namespace fastlayers {
namespace cpu {

enum class Isa : int64_t { Portable = 0, Avx2 = 1, Avx512 = 2, Avx512Bf16 = 3, Amx = 4, AmxEmulated = 5 };
constexpr int64_t kIsaCount = 6;

const char* isa_name(Isa isa);

// Whether this process can run `isa` (amx_emulated: always).
bool isa_supported(Isa isa);

// The best rung the processor and OS allow (never amx_emulated).
Isa best_isa();

// Why AMX is or is not available, in words (for the Python report).
std::string amx_status();

// What the kernels use unless told otherwise: best_isa(), but avx512_bf16 for amx.
Isa default_isa();

// The ISA the kernels use now.
Isa active_isa();

// The rung for plain vector code (everything but the bfloat16 GEMM's tile
// kernel): the active one, except that a forced amx_emulated, the highest
// rung, means the CPU's default there (it may have no AVX-512 at all).
Isa vector_isa();

// Caps (or, for amx_emulated, forces) the ISA; -1 restores the default.
// Returns the previous setting (-1 for the default). Unsupported rungs are
// an error naming what the CPU has.
int64_t set_isa(int64_t isa);

// The core design, where a measured table depends on more than the rung
// (the GEMM policy's crossovers): AMD's Zen 4 (family 0x19 with AVX-512) and
// Zen 5 (family 0x1A), from cpuid; Other for everything else.
enum class Core : int64_t { Other = 0, Zen4 = 1, Zen5 = 2 };
Core core();
const char* core_name(Core core);  // "other", "zen4", "zen5"

// Data cache sizes in bytes (L1 and L2 per core, L3 shared), from the OS,
// with conservative defaults where it does not say.
struct CacheSizes {
  int64_t l1d, l2, l3;
};
const CacheSizes& cache_sizes();

}  // namespace cpu
}  // namespace fastlayers
