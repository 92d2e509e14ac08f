// The AMX-BF16 tile kernel, written once against the TILE_* macros so that
// it compiles both for the real tile unit (cpu_gemm_amx.cpp) and for a
// software one (cpu_gemm_amx_emulated.cpp), whose runs check this file's
// tiling and the driver's packing on any CPU.
//
// 32 x 32 outputs in four 16 x 16 float tiles (0-3), fed per 32-wide k step
// by two A tiles (4, 5: 16 rows x 32 bfloat16, from a RowMajor panel) and two
// B tiles (6, 7: 16 k pairs x 16 columns, from a KPairs panel). kc is a
// multiple of 32 (k_align). The tile configuration is loaded on every call:
// other code on the thread (oneDNN) may have loaded its own.
//
// Expects: TILE_LOADCONFIG(cfg), TILE_ZERO(t), TILE_LOAD(t, ptr, stride_bytes),
// TILE_STORE(t, ptr, stride_bytes), TILE_DPBF16PS(c, a, b).

struct TileConfig {
  uint8_t palette_id = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "the tile configuration is 64 bytes");

constexpr int kAmxMR = 32, kAmxNR = 32;

void amx_tile(int64_t kc, const Bf16Bits* a, const Bf16Bits* b, float* c, int64_t ldc, int mr, int nr, bool accumulate,
              const float* bias, bool relu) {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) cfg.rows[t] = 16, cfg.colsb[t] = 64;
  TILE_LOADCONFIG(&cfg);
  TILE_ZERO(0);
  TILE_ZERO(1);
  TILE_ZERO(2);
  TILE_ZERO(3);
  const int64_t a_stride = kc * 2;          // bytes between A rows
  const int64_t b_stride = kAmxNR * 2 * 2;  // bytes between k pairs of B
  for (int64_t p = 0; p < kc; p += 32) {
    TILE_LOAD(4, a + p, a_stride);
    TILE_LOAD(5, a + 16 * kc + p, a_stride);
    TILE_LOAD(6, b + p * kAmxNR, b_stride);
    TILE_LOAD(7, b + p * kAmxNR + 32, b_stride);
    TILE_DPBF16PS(0, 4, 6);
    TILE_DPBF16PS(1, 4, 7);
    TILE_DPBF16PS(2, 5, 6);
    TILE_DPBF16PS(3, 5, 7);
  }
  alignas(64) float out[kAmxMR][kAmxNR];
  TILE_STORE(0, &out[0][0], kAmxNR * 4);
  TILE_STORE(1, &out[0][16], kAmxNR * 4);
  TILE_STORE(2, &out[16][0], kAmxNR * 4);
  TILE_STORE(3, &out[16][16], kAmxNR * 4);
  for (int r = 0; r < mr; ++r) {
    float* crow = c + r * ldc;
    for (int j = 0; j < nr; ++j) {
      float v = out[r][j];
      if (accumulate) v += crow[j];
      if (bias) v += bias[j];
      if (relu) v = v < 0.f ? 0.f : v;  // keeps NaN, as torch.relu
      crow[j] = v;
    }
  }
}

TileKernel<float, Bf16Bits> amx_kernel() { return {kAmxMR, kAmxNR, 32, Layout::RowMajor, Layout::KPairs, &amx_tile}; }
