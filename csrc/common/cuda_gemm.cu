// The kernels of the CUDA matrix product (contract in cuda_gemm.h), compiled
// once for every op.
//
// Four kernels: a tensor-core tiling for half/bfloat16 on sm_80+ (mma.sync
// m16n8k16 fed by ldmatrix, 128x128 tiles), a double-buffered 128x128 SIMT
// tiling for large float products (8x8 outputs per thread), the portable
// SIMT tiling for the rest (64x64 tiles, 4x4 outputs per thread), and a
// warp-per-output-column kernel for a handful of rows, where reading the
// weight once dominates.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cuda_gemm.h"
#include "cuda_mma.cuh"

namespace fastlayers {
namespace cuda {
namespace {

template <typename T, typename Acc>
__device__ __forceinline__ Acc load_a(const GemmArgs<T, Acc>& g, int64_t i, int64_t p) {
  if (i >= g.M || p >= g.K) return Acc(0);
  if (g.mask.data && !relu_mask_on(g.mask(i, p))) return Acc(0);
  return static_cast<Acc>(g.a(i, p));
}

template <typename T, typename Acc>
__device__ __forceinline__ void store_c(const GemmArgs<T, Acc>& g, int64_t i, int64_t j, Acc v) {
  if (i >= g.M || j >= g.N) return;
  if (g.bias) v += static_cast<Acc>(g.bias[j * g.bias_stride]);
  if (g.relu && v < Acc(0)) v = Acc(0);  // NaN passes, as in torch.relu
  g.c[i * g.ldc + j] = static_cast<T>(v);
}

constexpr int kBM = 64, kBN = 64, kBK = 16, kTM = 4, kTN = 4;
constexpr int kThreads = (kBM / kTM) * (kBN / kTN);  // 256

// Block (blockIdx.x, y) computes rows [64x, 64x+64) and, for each column
// tile t = y, y + gridDim.y, ..., columns [64t, 64t+64) of C (a grid-stride
// loop: any N fits in one launch). Tile 0 also produces the row sums, so
// they come out even when N == 0.
template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads, 2) gemm_tiled_kernel(const GemmArgs<T, Acc> g, int64_t col_tiles) {
  __shared__ Acc As[kBK][kBM + 1];
  __shared__ Acc Bs[kBK][kBN + 1];
  const int tid = threadIdx.x;
  const int tx = tid % (kBN / kTN), ty = tid / (kBN / kTN);
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kBM;
  // Let consecutive threads walk the operand's contiguous dimension.
  const bool a_p_fast = g.a.cs <= g.a.rs;
  const bool b_j_fast = g.b.cs <= g.b.rs;

  for (int64_t tile = blockIdx.y; tile < col_tiles; tile += gridDim.y) {
    const int64_t j0 = tile * kBN;
    const bool want_sums = g.row_sums != nullptr && tile == 0;
    Acc acc[kTM][kTN];
#pragma unroll
    for (int r = 0; r < kTM; ++r)
#pragma unroll
      for (int c = 0; c < kTN; ++c) acc[r][c] = Acc(0);
    Acc row_sum = Acc(0);

    for (int64_t p0 = 0; p0 < g.K; p0 += kBK) {
#pragma unroll
      for (int l = 0; l < kBM * kBK / kThreads; ++l) {
        const int e = tid + l * kThreads;
        const int r = a_p_fast ? e / kBK : e % kBM;
        const int k = a_p_fast ? e % kBK : e / kBM;
        As[k][r] = load_a(g, i0 + r, p0 + k);
      }
#pragma unroll
      for (int l = 0; l < kBK * kBN / kThreads; ++l) {
        const int e = tid + l * kThreads;
        const int k = b_j_fast ? e / kBN : e % kBK;
        const int c = b_j_fast ? e % kBN : e / kBK;
        const int64_t p = p0 + k, j = j0 + c;
        Bs[k][c] = (p < g.K && j < g.N) ? static_cast<Acc>(g.b(p, j)) : Acc(0);
      }
      __syncthreads();
      if (want_sums && tid < kBM) {
#pragma unroll
        for (int k = 0; k < kBK; ++k) row_sum += As[k][tid];
      }
#pragma unroll 4
      for (int k = 0; k < kBK; ++k) {
        Acc af[kTM], bf[kTN];
#pragma unroll
        for (int r = 0; r < kTM; ++r) af[r] = As[k][ty * kTM + r];
#pragma unroll
        for (int c = 0; c < kTN; ++c) bf[c] = Bs[k][tx * kTN + c];
#pragma unroll
        for (int r = 0; r < kTM; ++r)
#pragma unroll
          for (int c = 0; c < kTN; ++c) acc[r][c] += af[r] * bf[c];
      }
      __syncthreads();
    }

    if (want_sums && tid < kBM && i0 + tid < g.M) {
      g.row_sums[i0 + tid] = static_cast<T>(row_sum);
    }
#pragma unroll
    for (int r = 0; r < kTM; ++r)
#pragma unroll
      for (int c = 0; c < kTN; ++c) store_c(g, i0 + ty * kTM + r, j0 + tx * kTN + c, acc[r][c]);
  }
}

// float32 products large enough to fill the GPU with 128x128 tiles: 8x8
// outputs per thread in four 4x4 quadrants 64 apart (so each thread's
// shared-memory reads are float4s, conflict-free), 8-deep reduction steps,
// shared memory double-buffered with the next step's operands prefetched
// into registers during the current step: one barrier per step. Rows of the
// staged tiles are padded by 4 floats so that the stores spread over banks.
constexpr int kLBM = 128, kLBN = 128, kLBK = 8, kLPad = 4;
constexpr int kLThreads = 256;
constexpr int kLLoads = kLBM * kLBK / kLThreads;  // elements of A (and of B) per thread per step

template <typename T>
__global__ void __launch_bounds__(kLThreads, 2)  // 2 blocks per SM: at most 128 registers
    gemm_float_large_kernel(const GemmArgs<T, float> g, int64_t col_tiles) {
  static_assert(std::is_same_v<T, float>, "the float32 kernel");
  __shared__ __align__(16) float As[2][kLBK][kLBM + kLPad];
  __shared__ __align__(16) float Bs[2][kLBK][kLBN + kLPad];
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kLBM;
  // Let consecutive threads walk each operand's contiguous dimension.
  const bool a_p_fast = g.a.cs <= g.a.rs;
  const bool b_j_fast = g.b.cs <= g.b.rs;
  const int64_t steps = (g.K + kLBK - 1) / kLBK;
  // This thread's l-th load of a step sits at (r0 + l dr, k0 + l dk) of the A
  // tile and (k0 + l dk, c0 + l dc) of the B tile.
  const int a_r0 = a_p_fast ? tid / kLBK : tid % kLBM, a_k0 = a_p_fast ? tid % kLBK : tid / kLBM;
  const int a_dr = a_p_fast ? kLThreads / kLBK : 0, a_dk = a_p_fast ? 0 : kLThreads / kLBM;
  const int b_k0 = b_j_fast ? tid / kLBN : tid % kLBK, b_c0 = b_j_fast ? tid % kLBN : tid / kLBK;
  const int b_dk = b_j_fast ? kLThreads / kLBN : 0, b_dc = b_j_fast ? 0 : kLThreads / kLBK;

  // Addresses as a base plus l times a fixed step: few registers, so the 64
  // accumulators fit without spills.
  const int64_t a_row = i0 + a_r0;
  const float* a_base = g.a.data + a_row * g.a.rs + a_k0 * g.a.cs;
  const int64_t a_step = a_dr * g.a.rs + a_dk * g.a.cs;
  const T* m_base = g.mask.data ? g.mask.data + a_row * g.mask.rs + a_k0 * g.mask.cs : nullptr;
  const int64_t m_step = a_dr * g.mask.rs + a_dk * g.mask.cs;

  for (int64_t tile = blockIdx.y; tile < col_tiles; tile += gridDim.y) {
    const int64_t j0 = tile * kLBN;
    const bool want_sums = g.row_sums != nullptr && tile == 0;
    const int64_t b_col = j0 + b_c0;
    const float* b_base = g.b.data + b_k0 * g.b.rs + b_col * g.b.cs;
    const int64_t b_step = b_dk * g.b.rs + b_dc * g.b.cs;
    float a_next[kLLoads], b_next[kLLoads];
    auto fetch = [&](int64_t p0) {
#pragma unroll
      for (int l = 0; l < kLLoads; ++l) {
        const bool a_in = a_row + l * a_dr < g.M && p0 + a_k0 + l * a_dk < g.K;
        float a = a_in ? a_base[p0 * g.a.cs + l * a_step] : 0.f;
        if (m_base && a_in && !relu_mask_on(m_base[p0 * g.mask.cs + l * m_step])) a = 0.f;
        a_next[l] = a;
        const bool b_in = p0 + b_k0 + l * b_dk < g.K && b_col + l * b_dc < g.N;
        b_next[l] = b_in ? b_base[p0 * g.b.rs + l * b_step] : 0.f;
      }
    };
    auto stash = [&](int buf) {
#pragma unroll
      for (int l = 0; l < kLLoads; ++l) {
        As[buf][a_k0 + l * a_dk][a_r0 + l * a_dr] = a_next[l];
        Bs[buf][b_k0 + l * b_dk][b_c0 + l * b_dc] = b_next[l];
      }
    };
    float acc[8][8];
#pragma unroll
    for (int r = 0; r < 8; ++r)
#pragma unroll
      for (int c = 0; c < 8; ++c) acc[r][c] = 0.f;
    float row_sum = 0.f;

    if (steps > 0) {
      fetch(0);
      stash(0);
    }
    __syncthreads();
    for (int64_t s = 0; s < steps; ++s) {
      const int buf = static_cast<int>(s & 1);
      if (s + 1 < steps) fetch((s + 1) * kLBK);  // in flight during the products below
      if (want_sums && tid < kLBM) {
#pragma unroll
        for (int k = 0; k < kLBK; ++k) row_sum += As[buf][k][tid];
      }
#pragma unroll 2  // fully unrolled, the compiler hoists all 8 steps' loads: 200 registers
      for (int k = 0; k < kLBK; ++k) {
        const float4 a_lo = *reinterpret_cast<const float4*>(&As[buf][k][ty * 4]);
        const float4 a_hi = *reinterpret_cast<const float4*>(&As[buf][k][64 + ty * 4]);
        const float4 b_lo = *reinterpret_cast<const float4*>(&Bs[buf][k][tx * 4]);
        const float4 b_hi = *reinterpret_cast<const float4*>(&Bs[buf][k][64 + tx * 4]);
        const float af[8] = {a_lo.x, a_lo.y, a_lo.z, a_lo.w, a_hi.x, a_hi.y, a_hi.z, a_hi.w};
        const float bf[8] = {b_lo.x, b_lo.y, b_lo.z, b_lo.w, b_hi.x, b_hi.y, b_hi.z, b_hi.w};
#pragma unroll
        for (int r = 0; r < 8; ++r)
#pragma unroll
          for (int c = 0; c < 8; ++c) acc[r][c] += af[r] * bf[c];
      }
      if (s + 1 < steps) stash(buf ^ 1);  // the other buffer: nobody reads it this step
      __syncthreads();
    }

    if (want_sums && tid < kLBM && i0 + tid < g.M) g.row_sums[i0 + tid] = row_sum;
#pragma unroll
    for (int r = 0; r < 8; ++r) {
      const int64_t i = i0 + (r / 4) * 64 + ty * 4 + r % 4;
#pragma unroll
      for (int c = 0; c < 8; ++c) store_c(g, i, j0 + (c / 4) * 64 + tx * 4 + c % 4, acc[r][c]);
    }
  }
}

// For at most kSmallM rows (and no mask, no row sums): one warp per output
// column j reads B's column once, lanes striding over the reduction, and
// keeps one partial sum per row.
constexpr int kSmallM = 8;
constexpr int kSmallWarps = 8;

template <typename T, typename Acc>
__global__ void __launch_bounds__(kSmallWarps * 32) gemm_small_m_kernel(const GemmArgs<T, Acc> g) {
  const int lane = threadIdx.x % 32;
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kSmallWarps + threadIdx.x / 32;
  if (j >= g.N) return;
  Acc acc[kSmallM];
#pragma unroll
  for (int r = 0; r < kSmallM; ++r) acc[r] = Acc(0);
  for (int64_t p = lane; p < g.K; p += 32) {
    const Acc bv = static_cast<Acc>(g.b(p, j));
#pragma unroll
    for (int r = 0; r < kSmallM; ++r)
      if (r < g.M) acc[r] += static_cast<Acc>(g.a(r, p)) * bv;
  }
#pragma unroll
  for (int r = 0; r < kSmallM; ++r) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], offset);
  }
  if (lane == 0) {
#pragma unroll
    for (int r = 0; r < kSmallM; ++r)
      if (r < g.M) store_c(g, r, j, acc[r]);
  }
}

// Tensor cores for half/bfloat16: a 128x128 block tile, 8 warps of 64x32
// (4x4 mma tiles of 16x8 each), 32-deep reduction steps. Operands are
// staged in shared memory as T, k contiguous, A as [m][k] and B as [n][k]
// (B's columns: the "col" operand of mma), rows padded by 8 elements so
// that ldmatrix's eight 16-byte row reads hit distinct banks. The mask is
// applied while staging; tile 0 also sums the staged A rows (row sums).
constexpr int kTcBM = 128, kTcBN = 128, kTcBK = 32, kTcPad = 8;
constexpr int kTcThreads = 256;
constexpr int kTcWarpM = 64, kTcWarpN = 32;  // warps arranged 2 x 4
constexpr int kTcMI = kTcWarpM / 16, kTcNI = kTcWarpN / 8;
static_assert(kTcBM == kTcBN, "staging maps thread chunks to A and B rows alike");

// Outputs (i, j) and (i, j + 1), j even, as one store of two elements when
// both exist and the pair is aligned; else one by one.
template <typename T>
struct alignas(2 * sizeof(T)) Pair {
  T v[2];
};

template <typename T>
__device__ __forceinline__ void store_c_pair(const GemmArgs<T, float>& g, int64_t i, int64_t j, float v0, float v1) {
  if (i >= g.M) return;
  T* dst = g.c + i * g.ldc + j;
  if (j + 1 < g.N && reinterpret_cast<uintptr_t>(dst) % sizeof(Pair<T>) == 0) {
    if (g.bias) {
      v0 += static_cast<float>(g.bias[j * g.bias_stride]);
      v1 += static_cast<float>(g.bias[(j + 1) * g.bias_stride]);
    }
    if (g.relu) {  // NaN passes, as in torch.relu
      if (v0 < 0.f) v0 = 0.f;
      if (v1 < 0.f) v1 = 0.f;
    }
    Pair<T> p;
    p.v[0] = static_cast<T>(v0), p.v[1] = static_cast<T>(v1);
    *reinterpret_cast<Pair<T>*>(dst) = p;
  } else {
    store_c(g, i, j, v0);
    store_c(g, i, j + 1, v1);
  }
}

// The tensor-core kernels' epilogue: one warp's 64x32 outputs from row i0 and
// column j0; lane holds columns 2(lane%4), +1 of rows lane/4 and lane/4 + 8
// of each 16x8 tile.
template <typename T>
__device__ __forceinline__ void store_mma_tile(const GemmArgs<T, float>& g, int64_t i0, int64_t j0, int lane,
                                               const float (&acc)[kTcMI][kTcNI][4]) {
#pragma unroll
  for (int mi = 0; mi < kTcMI; ++mi)
#pragma unroll
    for (int ni = 0; ni < kTcNI; ++ni)
#pragma unroll
      for (int half = 0; half < 2; ++half)
        store_c_pair(g, i0 + mi * 16 + lane / 4 + 8 * half, j0 + ni * 8 + 2 * (lane % 4), acc[mi][ni][2 * half],
                     acc[mi][ni][2 * half + 1]);
}

// One 32-deep step of the tensor-core kernels: this warp's 64x32 outputs
// accumulate the staged tiles As [m][k] and Bs [n][k].
template <typename T>
__device__ __forceinline__ void mma_tile_step(const T (&As)[kTcBM][kTcBK + kTcPad],
                                              const T (&Bs)[kTcBN][kTcBK + kTcPad], int wm, int wn, int lane,
                                              float (&acc)[kTcMI][kTcNI][4]) {
#pragma unroll
  for (int kk = 0; kk < kTcBK; kk += 16) {
    uint32_t a[kTcMI][4], b[kTcNI][2];
#pragma unroll
    for (int mi = 0; mi < kTcMI; ++mi)
      ldmatrix_x4(a[mi], &As[wm * kTcWarpM + mi * 16 + lane % 16][kk + (lane / 16) * 8]);
#pragma unroll
    for (int pair = 0; pair < kTcNI / 2; ++pair) {  // x4: two 8-column tiles, both k halves
      uint32_t r[4];
      ldmatrix_x4(r, &Bs[wn * kTcWarpN + pair * 16 + lane % 8 + (lane / 16) * 8][kk + ((lane / 8) % 2) * 8]);
      b[2 * pair][0] = r[0], b[2 * pair][1] = r[1];
      b[2 * pair + 1][0] = r[2], b[2 * pair + 1][1] = r[3];
    }
#pragma unroll
    for (int mi = 0; mi < kTcMI; ++mi)
#pragma unroll
      for (int ni = 0; ni < kTcNI; ++ni) mma_m16n8k16<T>(acc[mi][ni], a[mi], b[ni]);
  }
}

template <typename T>
__global__ void __launch_bounds__(kTcThreads, 2)
    gemm_tensor_core_kernel(const GemmArgs<T, float> g, int64_t col_tiles) {
  __shared__ __align__(16) T As[kTcBM][kTcBK + kTcPad];
  __shared__ __align__(16) T Bs[kTcBN][kTcBK + kTcPad];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp / (kTcBN / kTcWarpN), wn = warp % (kTcBN / kTcWarpN);
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kTcBM;
  const bool a_k_fast = g.a.cs <= g.a.rs;
  const bool b_k_fast = g.b.rs <= g.b.cs;
  const T zero = T(0.f);

  for (int64_t tile = blockIdx.y; tile < col_tiles; tile += gridDim.y) {
    const int64_t j0 = tile * kTcBN;
    const bool want_sums = g.row_sums != nullptr && tile == 0;
    float acc[kTcMI][kTcNI][4] = {};
    float row_sum = 0.f;

    for (int64_t p0 = 0; p0 < g.K; p0 += kTcBK) {
#pragma unroll 4
      for (int l = 0; l < kTcBM * kTcBK / kTcThreads; ++l) {
        const int e = tid + l * kTcThreads;
        const int r = a_k_fast ? e / kTcBK : e % kTcBM;
        const int k = a_k_fast ? e % kTcBK : e / kTcBM;
        const int64_t i = i0 + r, p = p0 + k;
        T v = zero;
        if (i < g.M && p < g.K && (g.mask.data == nullptr || relu_mask_on(g.mask(i, p)))) v = g.a(i, p);
        As[r][k] = v;
      }
#pragma unroll 4
      for (int l = 0; l < kTcBN * kTcBK / kTcThreads; ++l) {
        const int e = tid + l * kTcThreads;
        const int n = b_k_fast ? e / kTcBK : e % kTcBN;
        const int k = b_k_fast ? e % kTcBK : e / kTcBN;
        const int64_t j = j0 + n, p = p0 + k;
        Bs[n][k] = (j < g.N && p < g.K) ? g.b(p, j) : zero;
      }
      __syncthreads();
      if (want_sums && tid < kTcBM) {
#pragma unroll
        for (int k = 0; k < kTcBK; ++k) row_sum += static_cast<float>(As[tid][k]);
      }
      mma_tile_step(As, Bs, wm, wn, lane, acc);
      __syncthreads();
    }

    if (want_sums && tid < kTcBM && i0 + tid < g.M) g.row_sums[i0 + tid] = static_cast<T>(row_sum);
    store_mma_tile(g, i0 + wm * kTcWarpM, j0 + wn * kTcWarpN, lane, acc);
  }
}

// The same tiling when both operands are k-contiguous with 16-byte aligned
// rows and there is no mask (the forward's x and W): each step's tiles are
// brought in with 16-byte cp.async copies (zero-filled past the edges), two
// stages deep, so the next step's loads are in flight during this step's
// products.
constexpr int kTcStages = 2;
constexpr int kTcChunks = kTcBM * kTcBK / 8 / kTcThreads;  // 16-byte copies per operand per thread per step

template <typename T>
__global__ void __launch_bounds__(kTcThreads, 2)
    gemm_tensor_core_async_kernel(const GemmArgs<T, float> g, int64_t col_tiles) {
  __shared__ __align__(16) T As[kTcStages][kTcBM][kTcBK + kTcPad];
  __shared__ __align__(16) T Bs[kTcStages][kTcBN][kTcBK + kTcPad];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp / (kTcBN / kTcWarpN), wn = warp % (kTcBN / kTcWarpN);
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kTcBM;
  const int64_t steps = (g.K + kTcBK - 1) / kTcBK;

  for (int64_t tile = blockIdx.y; tile < col_tiles; tile += gridDim.y) {
    const int64_t j0 = tile * kTcBN;
    const bool want_sums = g.row_sums != nullptr && tile == 0;
    // Copies of step `step` into stage `stage`: chunk c is row c / 4,
    // elements 8 (c % 4) .. +8 of the tile's 32-deep slice.
    auto issue = [&](int64_t step, int stage) {
      const int64_t p0 = step * kTcBK;
#pragma unroll
      for (int l = 0; l < kTcChunks; ++l) {
        const int c = tid + l * kTcThreads, r = c / (kTcBK / 8), kc = (c % (kTcBK / 8)) * 8;
        const int64_t p = p0 + kc;
        const int k_bytes = static_cast<int>(std::min<int64_t>(std::max<int64_t>(g.K - p, 0), 8)) * sizeof(T);
        const int64_t i = i0 + r, j = j0 + r;
        const bool a_in = i < g.M && k_bytes > 0, b_in = j < g.N && k_bytes > 0;
        cp_async_16(&As[stage][r][kc], a_in ? g.a.data + i * g.a.rs + p : g.a.data, a_in ? k_bytes : 0);
        cp_async_16(&Bs[stage][r][kc], b_in ? g.b.data + j * g.b.cs + p : g.b.data, b_in ? k_bytes : 0);
      }
      cp_async_commit();
    };
    float acc[kTcMI][kTcNI][4] = {};
    float row_sum = 0.f;

    if (steps > 0) issue(0, 0);
    for (int64_t s = 0; s < steps; ++s) {
      const int stage = static_cast<int>(s % kTcStages);
      if (s + 1 < steps) {
        issue(s + 1, static_cast<int>((s + 1) % kTcStages));  // that stage was last read before the barrier below
        cp_async_wait<1>();                                   // this step's copies have landed
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();  // ... and everyone else's
      if (want_sums && tid < kTcBM) {
#pragma unroll
        for (int k = 0; k < kTcBK; ++k) row_sum += static_cast<float>(As[stage][tid][k]);
      }
      mma_tile_step(As[stage], Bs[stage], wm, wn, lane, acc);
      __syncthreads();  // this stage is refilled by the next step's copies
    }

    if (want_sums && tid < kTcBM && i0 + tid < g.M) g.row_sums[i0 + tid] = static_cast<T>(row_sum);
    store_mma_tile(g, i0 + wm * kTcWarpM, j0 + wn * kTcWarpN, lane, acc);
  }
}

// Whether the operands suit gemm_tensor_core_async_kernel: A(i, p) and
// B(p, j) contiguous along p, rows starting on 16-byte boundaries, no mask.
template <typename T, typename Acc>
bool async_copy_layout(const GemmArgs<T, Acc>& g) {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  constexpr int64_t kPerChunk = 16 / sizeof(T);
  return g.mask.data == nullptr && g.a.cs == 1 && g.b.rs == 1 && (g.M == 1 || g.a.rs % kPerChunk == 0) &&
         (g.N == 1 || g.b.cs % kPerChunk == 0) && aligned(g.a.data) && aligned(g.b.data);
}

// Whether the tensor-core kernels run as sm_80+ code here: the device is
// Ampere or later and the code it runs was compiled for it (a build for an
// older virtual architecture, JIT-compiled, would reach their __trap()).
template <typename T>
bool tensor_cores_usable() {
  if (at::cuda::getCurrentDeviceProperties()->major < 8) return false;
  static const bool compiled_for_sm80 = [] {
    cudaFuncAttributes attributes;
    return cudaFuncGetAttributes(&attributes, gemm_tensor_core_kernel<T>) == cudaSuccess && attributes.ptxVersion >= 80;
  }();
  return compiled_for_sm80;
}

template <typename T>
constexpr bool kHalfType = std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>;

// Row tiles along x, column tiles along y (grid-stride past 65535).
inline dim3 tile_grid(int64_t M, int64_t N, int64_t bm, int64_t bn, int64_t* col_tiles) {
  const int64_t row_tiles = (M + bm - 1) / bm;
  *col_tiles = std::max<int64_t>(1, (N + bn - 1) / bn);
  TORCH_CHECK(row_tiles <= int64_t(0x7fffffff), "fastlayers: a matrix product with ", M,
              " rows is too tall for one launch");
  return dim3(static_cast<unsigned>(row_tiles), static_cast<unsigned>(std::min<int64_t>(*col_tiles, 65535)));
}

}  // namespace

template <typename T, typename Acc>
void gemm(const GemmArgs<T, Acc>& g) {
  // With N == 0 there is nothing to store, but row sums (all zero) are still due.
  if (g.M == 0 || (g.N == 0 && g.row_sums == nullptr)) return;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  int64_t col_tiles = 0;
  if (g.M <= kSmallM && g.mask.data == nullptr && g.row_sums == nullptr) {
    const unsigned blocks = static_cast<unsigned>((g.N + kSmallWarps - 1) / kSmallWarps);
    gemm_small_m_kernel<T, Acc><<<blocks, kSmallWarps * 32, 0, stream>>>(g);
  } else if constexpr (kHalfType<T>) {
    if (tensor_cores_usable<T>()) {
      const dim3 grid = tile_grid(g.M, g.N, kTcBM, kTcBN, &col_tiles);
      if (async_copy_layout(g)) {
        gemm_tensor_core_async_kernel<T><<<grid, kTcThreads, 0, stream>>>(g, col_tiles);
      } else {
        gemm_tensor_core_kernel<T><<<grid, kTcThreads, 0, stream>>>(g, col_tiles);
      }
    } else {
      const dim3 grid = tile_grid(g.M, g.N, kBM, kBN, &col_tiles);
      gemm_tiled_kernel<T, Acc><<<grid, kThreads, 0, stream>>>(g, col_tiles);
    }
  } else if constexpr (std::is_same_v<T, float> && std::is_same_v<Acc, float>) {
    const int64_t large_tiles = ((g.M + kLBM - 1) / kLBM) * ((g.N + kLBN - 1) / kLBN);
    if (large_tiles >= at::cuda::getCurrentDeviceProperties()->multiProcessorCount) {
      // Enough 128x128 tiles for every SM; with fewer, 64x64 tiles keep more SMs busy.
      const dim3 grid = tile_grid(g.M, g.N, kLBM, kLBN, &col_tiles);
      gemm_float_large_kernel<T><<<grid, kLThreads, 0, stream>>>(g, col_tiles);
    } else {
      const dim3 grid = tile_grid(g.M, g.N, kBM, kBN, &col_tiles);
      gemm_tiled_kernel<T, Acc><<<grid, kThreads, 0, stream>>>(g, col_tiles);
    }
  } else {
    const dim3 grid = tile_grid(g.M, g.N, kBM, kBN, &col_tiles);
    gemm_tiled_kernel<T, Acc><<<grid, kThreads, 0, stream>>>(g, col_tiles);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void gemm<float, float>(const GemmArgs<float, float>&);
template void gemm<double, double>(const GemmArgs<double, double>&);
template void gemm<c10::Half, float>(const GemmArgs<c10::Half, float>&);
template void gemm<c10::BFloat16, float>(const GemmArgs<c10::BFloat16, float>&);

}  // namespace cuda
}  // namespace fastlayers
