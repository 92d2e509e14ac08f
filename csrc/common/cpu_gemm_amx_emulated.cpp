// The AMX-BF16 kernel (cpu_gemm_amx.inl) on a software tile unit: eight
// tiles of 16 rows x 64 bytes per thread, configured, loaded, multiplied and
// stored as the ISA reference describes (rows and column bytes from the
// configuration, rows past them zero; TDPBF16PS adds, per float lane, the
// two products of a bfloat16 pair). Slow, and only for tests: it runs when
// the amx_emulated rung is forced.
#include <cstdint>
#include <cstring>

#include <c10/util/Exception.h>

#include "cpu_gemm_kernels.h"

namespace fastlayers {
namespace cpu {
namespace amx_emulated {
namespace {

struct TileUnit {
  bool configured = false;
  int rows[8] = {}, colsb[8] = {};
  alignas(64) uint8_t tile[8][16][64] = {};
};
thread_local TileUnit unit;

float bf16_to_float(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof(f));
  return f;
}

void load_config(const void* cfg) {
  const uint8_t* bytes = static_cast<const uint8_t*>(cfg);
  TORCH_CHECK(bytes[0] == 1, "amx_emulated: palette ", int(bytes[0]), " is not palette 1");
  for (int t = 0; t < 8; ++t) {
    uint16_t colsb;
    std::memcpy(&colsb, bytes + 16 + 2 * t, 2);
    unit.colsb[t] = colsb;
    unit.rows[t] = bytes[48 + t];
    TORCH_CHECK(unit.rows[t] <= 16 && unit.colsb[t] <= 64, "amx_emulated: tile ", t, " is configured past 16 x 64 B");
  }
  unit.configured = true;
  std::memset(unit.tile, 0, sizeof(unit.tile));
}

void check(int t) { TORCH_CHECK(unit.configured && unit.rows[t] > 0, "amx_emulated: tile ", t, " used unconfigured"); }

void zero(int t) {
  check(t);
  std::memset(unit.tile[t], 0, sizeof(unit.tile[t]));
}

void load(int t, const void* base, int64_t stride) {
  check(t);
  std::memset(unit.tile[t], 0, sizeof(unit.tile[t]));
  for (int r = 0; r < unit.rows[t]; ++r)
    std::memcpy(unit.tile[t][r], static_cast<const uint8_t*>(base) + r * stride, unit.colsb[t]);
}

void store(int t, void* base, int64_t stride) {
  check(t);
  for (int r = 0; r < unit.rows[t]; ++r)
    std::memcpy(static_cast<uint8_t*>(base) + r * stride, unit.tile[t][r], unit.colsb[t]);
}

// c[m][n] += sum_k a.bf16[m][2k] * b.bf16[k][2n] + a.bf16[m][2k+1] * b.bf16[k][2n+1]
void dpbf16ps(int c, int a, int b) {
  check(c), check(a), check(b);
  const int M = unit.rows[c], N = unit.colsb[c] / 4, K = unit.colsb[a] / 4;
  TORCH_CHECK(unit.rows[a] == M && unit.rows[b] == K && unit.colsb[b] == unit.colsb[c],
              "amx_emulated: tile shapes do not chain (TDPBF16PS)");
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      float acc;
      std::memcpy(&acc, &unit.tile[c][m][4 * n], 4);
      for (int k = 0; k < K; ++k) {
        uint16_t a0, a1, b0, b1;
        std::memcpy(&a0, &unit.tile[a][m][4 * k], 2);
        std::memcpy(&a1, &unit.tile[a][m][4 * k + 2], 2);
        std::memcpy(&b0, &unit.tile[b][k][4 * n], 2);
        std::memcpy(&b1, &unit.tile[b][k][4 * n + 2], 2);
        acc += bf16_to_float(a0) * bf16_to_float(b0);
        acc += bf16_to_float(a1) * bf16_to_float(b1);
      }
      std::memcpy(&unit.tile[c][m][4 * n], &acc, 4);
    }
}

#define TILE_LOADCONFIG(cfg) load_config(cfg)
#define TILE_ZERO(t) zero(t)
#define TILE_LOAD(t, ptr, stride) load(t, ptr, stride)
#define TILE_STORE(t, ptr, stride) store(t, ptr, stride)
#define TILE_DPBF16PS(c, a, b) dpbf16ps(c, a, b)
#include "cpu_gemm_amx.inl"

}  // namespace

TileKernel<float, Bf16Bits> bf16_kernel() { return amx_kernel(); }

}  // namespace amx_emulated
}  // namespace cpu
}  // namespace fastlayers
