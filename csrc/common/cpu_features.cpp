// See cpu_features.h.
#include "cpu_features.h"

#include <c10/util/Exception.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__)
#include <cpuid.h>
#endif
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace fastlayers {
namespace cpu {
namespace {

constexpr const char* kNames[kIsaCount] = {"portable", "avx2", "avx512", "avx512_bf16", "amx", "amx_emulated"};

struct Detected {
  bool has[kIsaCount] = {true, false, false, false, false, true};
  std::string amx_status;
  Core core = Core::Other;
};

// AMD's family: the base family, plus the extended one where the base is 0xF.
Core detect_core(bool avx512) {
#if defined(__x86_64__)
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(0, &a, &b, &c, &d)) return Core::Other;
  const bool amd = b == 0x68747541 && d == 0x69746e65 && c == 0x444d4163;  // "AuthenticAMD"
  if (!amd || !__get_cpuid(1, &a, &b, &c, &d)) return Core::Other;
  const unsigned base = (a >> 8) & 0xF, family = base == 0xF ? base + ((a >> 20) & 0xFF) : base;
  if (family == 0x1A) return Core::Zen5;
  if (family == 0x19 && avx512) return Core::Zen4;  // Zen 3 shares the family, without AVX-512
#else
  (void)avx512;
#endif
  return Core::Other;
}

// Linux keeps the AMX tile data out of a thread's saved state until the
// process asks for it (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA);
// a tile instruction before that is SIGILL. The request is made once here.
bool request_amx_permission(std::string& status) {
#if defined(__linux__) && defined(__x86_64__)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
    status = std::string("the OS refused the tile state (arch_prctl: ") + std::strerror(errno) + ")";
    return false;
  }
  status = "available (tile state granted by the OS)";
  return true;
#else
  status = "not on this OS";
  return false;
#endif
}

Detected detect() {
  Detected d;
#if defined(__x86_64__)
  __builtin_cpu_init();
  d.has[1] = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  d.has[2] = d.has[1] && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  d.has[3] = d.has[2] && __builtin_cpu_supports("avx512bf16");
  const bool amx_cpu = d.has[2] && __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16");
  const char* env = std::getenv("FASTLAYERS_CPU_AMX");
  if (!amx_cpu) {
    d.amx_status = "the CPU has no AMX-BF16";
  } else if (env && std::strcmp(env, "0") == 0) {
    d.amx_status = "turned off by FASTLAYERS_CPU_AMX=0";
  } else {
    d.has[4] = request_amx_permission(d.amx_status);
  }
  d.core = detect_core(d.has[2]);
#else
  d.amx_status = "not an x86-64 CPU";
#endif
  return d;
}

const Detected& detected() {
  static const Detected d = detect();
  return d;
}

int64_t initial_setting() {
  const char* env = std::getenv("FASTLAYERS_CPU_ISA");
  if (!env || !*env || std::strcmp(env, "auto") == 0) return -1;
  for (int64_t i = 0; i < kIsaCount; ++i)
    if (std::strcmp(env, kNames[i]) == 0) return detected().has[i] ? i : -1;
  return -1;  // an unknown name is not worth failing an import over
}

std::atomic<int64_t>& setting() {
  static std::atomic<int64_t> s{initial_setting()};
  return s;
}

}  // namespace

const char* isa_name(Isa isa) { return kNames[static_cast<int64_t>(isa)]; }

bool isa_supported(Isa isa) { return detected().has[static_cast<int64_t>(isa)]; }

Isa best_isa() {
  for (int64_t i = static_cast<int64_t>(Isa::Amx); i > 0; --i)
    if (detected().has[i]) return static_cast<Isa>(i);
  return Isa::Portable;
}

std::string amx_status() { return detected().amx_status; }

Core core() { return detected().core; }

const char* core_name(Core core) {
  switch (core) {
    case Core::Zen4:
      return "zen4";
    case Core::Zen5:
      return "zen5";
    default:
      return "other";
  }
}

Isa default_isa() {
  const Isa best = best_isa();
  return best == Isa::Amx ? Isa::Avx512Bf16 : best;
}

Isa active_isa() {
  const int64_t s = setting().load(std::memory_order_relaxed);
  return s < 0 ? default_isa() : static_cast<Isa>(s);
}

Isa vector_isa() {
  const Isa active = active_isa();
  return active == Isa::AmxEmulated ? default_isa() : active;
}

int64_t set_isa(int64_t isa) {
  TORCH_CHECK(isa >= -1 && isa < kIsaCount, "fastlayers::set_cpu_isa: argument 'isa' must be -1 (auto) or 0..",
              kIsaCount - 1, ", got ", isa);
  if (isa >= 0) {
    TORCH_CHECK(isa_supported(static_cast<Isa>(isa)), "fastlayers::set_cpu_isa: this CPU cannot run the '", kNames[isa],
                "' kernels (best available: '", isa_name(best_isa()), "'; AMX: ", amx_status(), ")");
  }
  return setting().exchange(isa);
}

const CacheSizes& cache_sizes() {
  static const CacheSizes sizes = [] {
    CacheSizes c{32 << 10, 1 << 20, 8 << 20};
#if defined(__linux__) && defined(_SC_LEVEL1_DCACHE_SIZE)
    const long l1 = sysconf(_SC_LEVEL1_DCACHE_SIZE), l2 = sysconf(_SC_LEVEL2_CACHE_SIZE),
               l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (l1 >= (16 << 10) && l1 <= (1 << 20)) c.l1d = l1;
    if (l2 >= (128 << 10) && l2 <= (64 << 20)) c.l2 = l2;
    if (l3 >= (1 << 20)) c.l3 = l3;
#endif
    return c;
  }();
  return sizes;
}

}  // namespace cpu
}  // namespace fastlayers
