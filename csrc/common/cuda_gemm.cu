// The kernels of the CUDA matrix product (contract in cuda_gemm.h), compiled
// once for every op.
//
// Four kernels: a tensor-core tiling for half/bfloat16 on sm_80+ (mma.sync
// m16n8k16 fed by ldmatrix, 128x128 tiles), a double-buffered 128x128 SIMT
// tiling for large float products (8x8 outputs per thread), the portable
// SIMT tiling for the rest (64x64 tiles, 4x4 outputs per thread), and a
// warp-per-output-column kernel for a handful of rows, where reading the
// weight once dominates. Behind the experimental switch (gemm_policy.h, not
// yet measured on a GPU): split-K over the tiled kernels, a tensor-core
// kernel for masked or m/n-contiguous operands (the backward's products),
// a warp-tiled float32 kernel reading 16-byte vectors, and for half
// precision on sm_90a, Hopper's warpgroup MMA (wgmma) fed by the TMA, for the
// forward's and the backward's operand layouts alike.
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "cuda_gemm.h"
#include "cuda_mma.cuh"
#include "gemm_policy.h"

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
  if (g.partial) {  // one slice of a split reduction: the raw sum, no epilogue
    g.partial[i * g.N + j] = v;
    return;
  }
  if (g.bias) v += static_cast<Acc>(g.bias[j * g.bias_stride]);
  if (g.relu && v < Acc(0)) v = Acc(0);  // NaN passes, as in torch.relu
  g.c[i * g.ldc + j] = static_cast<T>(v);
}

template <typename T, typename Acc>
__device__ __forceinline__ void store_row_sum(const GemmArgs<T, Acc>& g, int64_t i, Acc v) {
  if (g.partial_row_sums) {
    g.partial_row_sums[i] = v;
  } else {
    g.row_sums[i] = static_cast<T>(v);
  }
}

// Under split-K, the outputs of slice z: its own plane of partial sums (and
// of row sums); otherwise the product's outputs.
template <typename T, typename Acc>
__device__ __forceinline__ GemmArgs<T, Acc> slice_outputs(GemmArgs<T, Acc> g, int64_t z) {
  if (g.partial) {
    g.partial += z * g.M * g.N;
    if (g.partial_row_sums) g.partial_row_sums += z * g.M;
  }
  return g;
}

// The product this block computes: all of it, or under split-K the slice of
// the reduction blockIdx.z names (operands advanced to its first k, partial
// outputs to its own plane), so that the kernels' loops run unchanged.
template <typename T, typename Acc>
__device__ __forceinline__ GemmArgs<T, Acc> this_slice(GemmArgs<T, Acc> g) {
  if (g.partial == nullptr) return g;
  const int64_t z = blockIdx.z, p0 = z * g.k_slice;
  g.a.data += p0 * g.a.cs;
  if (g.mask.data) g.mask.data += p0 * g.mask.cs;
  g.b.data += p0 * g.b.rs;
  g.K = std::max<int64_t>(0, std::min<int64_t>(g.k_slice, g.K - p0));
  g.partial += z * g.M * g.N;  // as slice_outputs(g, z): written out, the async kernel spills 68 bytes less
  if (g.partial_row_sums) g.partial_row_sums += z * g.M;
  return g;
}

constexpr int kBM = 64, kBN = 64, kBK = 16, kTM = 4, kTN = 4;
constexpr int kThreads = (kBM / kTM) * (kBN / kTN);  // 256

// Block (blockIdx.x, y) computes rows [64x, 64x+64) and, for each column
// tile t = y, y + gridDim.y, ..., columns [64t, 64t+64) of C (a grid-stride
// loop: any N fits in one launch). Tile 0 also produces the row sums, so
// they come out even when N == 0.
template <typename T, typename Acc>
__global__ void __launch_bounds__(kThreads, 2) gemm_tiled_kernel(const GemmArgs<T, Acc> args, int64_t col_tiles) {
  const GemmArgs<T, Acc> g = this_slice(args);
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

    if (want_sums && tid < kBM && i0 + tid < g.M) store_row_sum(g, i0 + tid, row_sum);
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
    gemm_float_large_kernel(const GemmArgs<T, float> args, int64_t col_tiles) {
  static_assert(std::is_same_v<T, float>, "the float32 kernel");
  GemmArgs<T, float> g = args;
  g.partial = g.partial_row_sums = nullptr;  // never split (it runs when the tiles fill the GPU): 16 spilled bytes less
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

    if (want_sums && tid < kLBM && i0 + tid < g.M) store_row_sum(g, i0 + tid, row_sum);
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
static_assert(kTcBK == 32, "the staged kernel runs a step as two 16-deep halves");

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
  if (j + 1 < g.N && g.partial == nullptr && reinterpret_cast<uintptr_t>(dst) % sizeof(Pair<T>) == 0) {
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
    gemm_tensor_core_kernel(const GemmArgs<T, float> args, int64_t col_tiles) {
  const GemmArgs<T, float> g = this_slice(args);
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

    if (want_sums && tid < kTcBM && i0 + tid < g.M) store_row_sum(g, i0 + tid, row_sum);
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
    gemm_tensor_core_async_kernel(const GemmArgs<T, float> args, int64_t col_tiles) {
  const GemmArgs<T, float> g = this_slice(args);
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

    if (want_sums && tid < kTcBM && i0 + tid < g.M) store_row_sum(g, i0 + tid, row_sum);
    store_mma_tile(g, i0 + wm * kTcWarpM, j0 + wn * kTcWarpN, lane, acc);
  }
}

// Hopper's warpgroup MMA (behind the wgmma switches; sm_90a code only, not
// yet run on a GPU): 128-row output tiles, two consumer warpgroups of 64
// rows each, one wgmma m64nNk16 per warpgroup and 16-deep slice of each
// 64-deep stage; operands reach shared memory by the TMA in the 128-byte
// swizzled layouts wgmma reads.
constexpr int kWgBM = 128, kWgBN = 128, kWgBK = 64, kWgStages = 5;
constexpr int kWgRowBytes = 128;                   // kWgBK half-precision elements
constexpr int kWgTileBytes = kWgBM * kWgRowBytes;  // one 128-row operand tile of a stage: 16 KB
static_assert(kWgBM == kWgBN && kWgBM == 2 * 64 && kWgStages >= 3, "two m64 warpgroups; a stage between load and use");
static_assert(kWgBK * 2 == kWgRowBytes, "a stage's row is the 128-byte swizzle's width of half-precision k");

// A stage holds each operand's 128 (m or n) x 64 (k) tile in one of two
// layouts: K-major, 128 rows of 128 bytes of k (what the forward's x and W
// give); or M/N-major, two blocks of 64 rows (k) of 128 bytes of m or n
// (what a transposed operand gives: the backward's), kWgMnBlockBytes apart.
// The TMA writes either as a whole box or two; wgmma reads either (its
// transpose bit), so no operand is ever transposed on the way.
constexpr int kWgMnBlockBytes = kWgBK * kWgRowBytes;
static_assert(2 * kWgMnBlockBytes == kWgTileBytes, "an M/N-major tile is two blocks of 64 m or n");

// The descriptor of the 64 rows (m or n) from mn0 and the 16-deep k slice
// ks of a stage's operand tile.
template <bool kKMajor>
__device__ __forceinline__ uint64_t stage_descriptor(const unsigned char* tile, int mn0, int ks) {
  if constexpr (kKMajor) {
    return wgmma_descriptor_128b(tile + mn0 * kWgRowBytes + ks * 32);
  } else {
    return wgmma_descriptor_128b_mn_major(tile + (mn0 / 64) * kWgMnBlockBytes + ks * 16 * kWgRowBytes, kWgMnBlockBytes);
  }
}

// The element (mn, k) of a stage's operand tile, as the swizzle placed it.
template <typename T, bool kKMajor>
__device__ __forceinline__ float stage_element(const unsigned char* tile, int mn, int k) {
  auto swizzled = [](int row, int byte) { return row * kWgRowBytes + (byte ^ ((row % 8) * 16)); };
  const int offset = kKMajor ? swizzled(mn, k * int(sizeof(T)))
                             : (mn / 64) * kWgMnBlockBytes + swizzled(k, (mn % 64) * int(sizeof(T)));
  return static_cast<float>(*reinterpret_cast<const T*>(tile + offset));
}

// Starts the products of one 64-deep stage on the 64 rows of warpgroup
// `warpgroup` and the stage's N columns: four wgmma, one per 16-deep slice,
// as one group.
template <typename T, bool kAKMajor = true, bool kBKMajor = true, int N = kWgBN>
__device__ __forceinline__ void wgmma_stage(float (&acc)[N / 2], const unsigned char* a_stage,
                                            const unsigned char* b_stage, int warpgroup) {
  wgmma_fence();
#pragma unroll
  for (int ks = 0; ks < kWgBK / 16; ++ks) {
    const uint64_t a = stage_descriptor<kAKMajor>(a_stage, warpgroup * 64, ks);
    const uint64_t b = stage_descriptor<kBKMajor>(b_stage, 0, ks);
    wgmma_m64nNk16<T, N, !kAKMajor, !kBKMajor>(acc, a, b, true);
  }
  wgmma_commit();
}

// Stores thread t's accumulators of a warpgroup's 64 x N outputs from
// (row0, j0) on, with the epilogue (wgmma's fragment layout: cuda_mma.cuh).
template <typename T, int N>
__device__ __forceinline__ void store_wgmma_tile(const GemmArgs<T, float>& g, int64_t row0, int64_t j0, int t,
                                                 const float (&acc)[N / 2]) {
  const int64_t row = row0 + 16 * (t / 32) + (t % 32) / 4;
#pragma unroll
  for (int e = 0; e < N / 2; e += 2)  // acc[e], acc[e + 1]: neighbouring columns, stored as a pair
    store_c_pair(g, row + 8 * ((e % 4) / 2), j0 + 8 * (e / 4) + 2 * (t % 4), acc[e], acc[e + 1]);
}

// The wgmma kernel, for operands in either layout (kAKMajor, kBKMajor:
// K-major, else M/N-major), with row sums and split-K (slices of whole
// stages); a mask is applied before (gemm() hands it the masked copy).
// Tiles are 128 x kBN: 128 wide (5 stages of 32 KB), or 256 wide (the
// wgmma_wide switch, where such tiles fill the GPU: twice the products per
// byte of A loaded, 128 accumulators per consumer thread, registers moved
// from the producer to the consumers by setmaxnreg, 4 stages of 48 KB).
// Warp-specialised and persistent: one producer warpgroup, of which one
// thread issues, per 64-deep stage, the TMA loads of the A and B tiles
// (swizzled by the TMA as wgmma reads them) onto the stage's `full`
// mbarrier; two consumer warpgroups wait on it, run their four wgmmas, and
// release the stage on its `empty` mbarrier once the products of the stage
// after it are issued (wgmma_wait<1>). The stages ring over all of a
// block's work: items (tile, slice) blockIdx.x, + gridDim.x, ... (row
// tiles fastest, so neighbouring blocks share B's tile in L2; slices
// last), and a consumer's epilogue overlaps the producer's loads for the
// next item. Each item's raw sums go to its slice's plane when split. On
// column tile 0 the consumers also sum their A rows from the stages (the
// row sums).
constexpr int kTmaThreads = 384;

template <int kBN>
struct TmaTiling {
  static_assert(kBN == 128 || kBN == 256, "128- or 256-wide tiles");
  static constexpr int kBTileBytes = kBN * kWgRowBytes;
  static constexpr int kStageBytes = kWgTileBytes + kBTileBytes;
  static constexpr int kStages = kBN == 128 ? kWgStages : 4;
  static constexpr int kSharedBytes = kStages * kStageBytes + 2 * kStages * 8 + 1024;  // stages, barriers, alignment
};
static_assert(TmaTiling<256>::kSharedBytes <= 227 * 1024, "within an SM's shared memory");

// The TMA loads of an operand's tile of kRows rows (k tile kt, rows from
// mn0) into `tile`: one box of kRows rows of 64 k, or kRows / 64 boxes of 64
// k-rows of 64 m or n.
template <bool kKMajor, int kRows>
__device__ __forceinline__ void tma_load_tile(unsigned char* tile, const CUtensorMap* map, int64_t kt, int mn0,
                                              uint64_t* bar) {
  const int k0 = static_cast<int>(kt * kWgBK);
  if constexpr (kKMajor) {
    tma_load_2d(tile, map, k0, mn0, bar);
  } else {
#pragma unroll
    for (int block = 0; block < kRows / 64; ++block)
      tma_load_2d(tile + block * kWgMnBlockBytes, map, mn0 + 64 * block, k0, bar);
  }
}

template <typename T, bool kAKMajor, bool kBKMajor, int kBN>
__global__ void __launch_bounds__(kTmaThreads, 1)
    gemm_wgmma_tma_kernel(const __grid_constant__ CUtensorMap a_map, const __grid_constant__ CUtensorMap b_map,
                          const GemmArgs<T, float> g, int64_t row_tiles, int64_t col_tiles, int64_t slices) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(FASTLAYERS_CUDA_EMULATION)
  using Tiling = TmaTiling<kBN>;
  constexpr int kStages = Tiling::kStages;
  extern __shared__ unsigned char wgmma_tma_shared[];
  unsigned char* const stages = wgmma_tma_shared + ((1024 - shared_address(wgmma_tma_shared) % 1024) % 1024);
  auto a_stage = [&](int s) { return stages + s * Tiling::kStageBytes; };
  auto b_stage = [&](int s) { return stages + s * Tiling::kStageBytes + kWgTileBytes; };
  uint64_t* const full = reinterpret_cast<uint64_t*>(stages + kStages * Tiling::kStageBytes);
  uint64_t* const empty = full + kStages;
  const int tid = threadIdx.x, warpgroup = tid / 128, t = tid % 128;
  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&full[s], 1);         // the producer's arrival, plus the loads' bytes
      mbarrier_init(&empty[s], 2 * 128);  // every consumer thread
    }
    fence_mbarrier_init();
  }
  __syncthreads();
  const int64_t tiles = row_tiles * col_tiles, work = tiles * slices, k_tiles = (g.K + kWgBK - 1) / kWgBK;
  const int64_t slice_k_tiles = slices > 1 ? g.k_slice / kWgBK : k_tiles;  // gemm() slices whole stages
  // Work item w: tile w % tiles, k tiles [kt_begin(w), kt_end(w)) of the reduction.
  auto kt_begin = [&](int64_t w) { return (w / tiles) * slice_k_tiles; };
  auto kt_end = [&](int64_t w) { return std::min<int64_t>(k_tiles, kt_begin(w) + slice_k_tiles); };

  if (warpgroup == 0) {
    if constexpr (kBN == 256) warpgroup_release_registers<40>();
    if (t != 0) return;  // no barrier below involves the producer warpgroup's other threads
    int64_t it = 0;      // k tiles issued, over all of this block's work
    for (int64_t w = blockIdx.x; w < work; w += gridDim.x) {
      const int64_t tile = w % tiles;
      const int i0 = static_cast<int>((tile % row_tiles) * kWgBM), j0 = static_cast<int>((tile / row_tiles) * kBN);
      for (int64_t kt = kt_begin(w); kt < kt_end(w); ++kt, ++it) {
        const int s = static_cast<int>(it % kStages);
        mbarrier_wait(&empty[s], static_cast<unsigned>((it / kStages) & 1) ^ 1);
        mbarrier_arrive_expect_tx(&full[s], Tiling::kStageBytes);
        tma_load_tile<kAKMajor, kWgBM>(a_stage(s), &a_map, kt, i0, &full[s]);
        tma_load_tile<kBKMajor, kBN>(b_stage(s), &b_map, kt, j0, &full[s]);
      }
    }
    return;
  }

  if constexpr (kBN == 256) warpgroup_claim_registers<232>();  // 128 x 40 + 256 x 232 <= 65536
  const int consumer = warpgroup - 1;
  // The row sums: thread t adds row sum_row of its warpgroup's 64 over the
  // k half sum_half of each stage; the two halves meet by a shuffle.
  const int sum_row = consumer * 64 + (t / 32) * 16 + t % 16, sum_half = (t % 32) / 16;
  int64_t it = 0;  // k tiles consumed, over all of this block's work
  for (int64_t w = blockIdx.x; w < work; w += gridDim.x) {
    const int64_t tile = w % tiles;
    const int64_t i0 = (tile % row_tiles) * kWgBM, j0 = (tile / row_tiles) * kBN;
    const GemmArgs<T, float> out = slice_outputs(g, w / tiles);
    const bool want_sums = g.row_sums != nullptr && j0 == 0;
    float acc[kBN / 2];
#pragma unroll
    for (int e = 0; e < kBN / 2; ++e) acc[e] = 0.f;
    float row_sum = 0.f;
    int in_use = -1;  // the stage whose products may still be in flight
    for (int64_t kt = kt_begin(w); kt < kt_end(w); ++kt, ++it) {
      const int s = static_cast<int>(it % kStages);
      mbarrier_wait(&full[s], static_cast<unsigned>((it / kStages) & 1));
      wgmma_stage<T, kAKMajor, kBKMajor, kBN>(acc, a_stage(s), b_stage(s), consumer);
      if (want_sums) {  // while the products run; the stage stays until released below
#pragma unroll 8
        for (int k = sum_half * kWgBK / 2; k < (sum_half + 1) * kWgBK / 2; ++k)
          row_sum += stage_element<T, kAKMajor>(a_stage(s), sum_row, k);
      }
      wgmma_wait<1>();  // the previous stage's products are done: release it
      if (in_use >= 0) mbarrier_arrive(&empty[in_use]);
      in_use = s;
    }
    wgmma_wait<0>();
    if (in_use >= 0) mbarrier_arrive(&empty[in_use]);
    if (want_sums) {
      row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 16);
      if (sum_half == 0 && i0 + sum_row < g.M) store_row_sum(out, i0 + sum_row, row_sum);
    }
    store_wgmma_tile<T, kBN>(out, i0 + consumer * 64, j0, t, acc);
  }
#else
  __trap();  // never launched: the host dispatch runs it only where the sm_90a code is loaded (wgmma_usable)
#endif
}

// Whether the wgmma kernel's sm_90a code is what this device runs: a
// compute capability 9.0 device, and a one-time probe kernel (compiled in
// the same fatbinary) reports that the loaded code was built for sm_90a.
// Not during a CUDA-graph capture (the probe synchronizes): then no, until
// a later call outside one.
__global__ void wgmma_probe_kernel(int* compiled_for_sm90a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL) || defined(FASTLAYERS_CUDA_EMULATION)
  *compiled_for_sm90a = 1;
#else
  *compiled_for_sm90a = 0;
#endif
}

template <typename T, int kBN>
void opt_in_tma_kernels() {
  for (auto kernel : {gemm_wgmma_tma_kernel<T, true, true, kBN>, gemm_wgmma_tma_kernel<T, true, false, kBN>,
                      gemm_wgmma_tma_kernel<T, false, true, kBN>, gemm_wgmma_tma_kernel<T, false, false, kBN>})
    C10_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, TmaTiling<kBN>::kSharedBytes));
}

bool wgmma_usable(const at::TensorOptions& scratch, cudaStream_t stream) {
  const cudaDeviceProp* device = at::cuda::getCurrentDeviceProperties();
  if (device->major != 9 || device->minor != 0) return false;
  static std::atomic<int> probed{-1};
  if (probed.load() < 0) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    C10_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    if (capture != cudaStreamCaptureStatusNone) return false;
    at::Tensor flag = at::zeros({1}, scratch.dtype(at::kInt));
    wgmma_probe_kernel<<<1, 1, 0, stream>>>(flag.data_ptr<int>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    probed.store(flag.item<int>());
  }
  if (probed.load() != 1) return false;
  // The shared-memory opt-in above 48 KB, once per device (it is per device context).
  static std::atomic<uint64_t> opted_in{0};
  const int index = c10::cuda::current_device();
  const uint64_t bit = index < 64 ? uint64_t(1) << index : 0;
  if (bit == 0 || !(opted_in.load() & bit)) {
    opt_in_tma_kernels<c10::BFloat16, 128>();
    opt_in_tma_kernels<c10::Half, 128>();
    opt_in_tma_kernels<c10::BFloat16, 256>();
    opt_in_tma_kernels<c10::Half, 256>();
    opted_in.fetch_or(bit);
  }
  return true;
}

// How an operand can be read in 16-byte vectors: along k (KMajor), along m
// or n (MnMajor), or not at all (no unit stride, or rows not 16-byte aligned).
enum class VectorLayout { None, KMajor, MnMajor };

template <typename T>
constexpr int kPerVector = 16 / sizeof(T);  // elements in a 16-byte vector

// A matrix X(mn, k) with strides (mn_stride, k_stride) and extents (A: mn = m;
// B: mn = n).
template <typename T>
VectorLayout vector_layout(const T* data, int64_t mn_stride, int64_t k_stride, int64_t mn_extent, int64_t k_extent) {
  if (reinterpret_cast<uintptr_t>(data) % 16 != 0) return VectorLayout::None;
  if (k_stride == 1 && (mn_extent == 1 || mn_stride % kPerVector<T> == 0)) return VectorLayout::KMajor;
  if (mn_stride == 1 && (k_extent == 1 || k_stride % kPerVector<T> == 0)) return VectorLayout::MnMajor;
  return VectorLayout::None;
}

template <typename T, typename Acc>
VectorLayout a_vector_layout(const GemmArgs<T, Acc>& g) {
  return vector_layout(g.a.data, g.a.rs, g.a.cs, g.M, g.K);
}
template <typename T, typename Acc>
VectorLayout b_vector_layout(const GemmArgs<T, Acc>& g) {
  return vector_layout(g.b.data, g.b.cs, g.b.rs, g.N, g.K);
}

// Tensor cores for operands the async kernel cannot take (behind the
// tensor_core_backward switch): a mask (the backward's output gradient times
// the ReLU mask), or an operand contiguous along m or n rather than k (the
// backward's transposed products). Each operand tile is read in 16-byte
// vectors along its contiguous dimension into registers, the mask applied
// there, and stored to shared memory in that same layout: k-contiguous tiles
// as [128][32 + 8] (fed to mma by ldmatrix), m- or n-contiguous ones as
// [32][128 + 8] (by ldmatrix.trans); both pads keep ldmatrix's eight 16-byte
// row reads on distinct banks. Double-buffered like the float32 kernel: the
// next step's vectors are loaded during this step's products, one barrier a
// step. Same 128x128 tiles, warp layout and epilogue as the kernels above.
constexpr int kTcKMajorLd = kTcBK + kTcPad;   // row length of a k-contiguous tile
constexpr int kTcMnMajorLd = kTcBM + kTcPad;  // row length of an m/n-contiguous tile
constexpr int kTcKMajorElems = kTcBM * kTcKMajorLd, kTcMnMajorElems = kTcBK * kTcMnMajorLd;
constexpr int kTcTileElems = std::max(kTcKMajorElems, kTcMnMajorElems);  // shared space for either layout
constexpr int kTcVectors = kTcBM * kTcBK / 8 / kTcThreads;  // 16-byte vectors per operand per thread per step

// An operand as 16-byte vectors run along it: element (across, along) at
// data[across * across_stride + along], inside [0, across_extent) x
// [0, along_extent). For A, across/along are m/k (k-contiguous) or k/m; for
// B, n/k or k/n.
template <typename T>
struct VectorSource {
  const T* data;
  int64_t across_stride, across_extent, along_extent;
};

// The 16 bytes of elements (8 half, 4 float) from (across, along) on, zero
// past the edges: one 16-byte load when all are inside (`along` is a
// multiple of the vector length, rows 16-byte aligned).
template <typename T>
__device__ __forceinline__ uint4 load_vector(const VectorSource<T>& s, int64_t across, int64_t along) {
  if (across < s.across_extent && along + kPerVector<T> <= s.along_extent)
    return *reinterpret_cast<const uint4*>(s.data + across * s.across_stride + along);
  T e[kPerVector<T>];
#pragma unroll
  for (int t = 0; t < kPerVector<T>; ++t)
    e[t] =
        across < s.across_extent && along + t < s.along_extent ? s.data[across * s.across_stride + along + t] : T(0.f);
  uint4 out;
  memcpy(&out, e, sizeof(out));  // not a T* into the uint4: that breaks strict aliasing (the emulator's
  return out;                    // compiler dropped such writes); copies of registers cost nothing
}

template <typename T>
__device__ __forceinline__ uint4 apply_mask(uint4 v, uint4 mask) {
  T e[kPerVector<T>], m[kPerVector<T>];
  memcpy(e, &v, sizeof(v));
  memcpy(m, &mask, sizeof(mask));
#pragma unroll
  for (int t = 0; t < kPerVector<T>; ++t)
    if (!relu_mask_on(m[t])) e[t] = T(0.f);
  memcpy(&v, e, sizeof(v));
  return v;
}

// Where vector l of this thread sits in a tile: `mn` along the 128-long
// side, `k` along the 32-deep one, and its offset in the shared tile.
template <bool kKMajor>
struct TileVector {
  int mn, k;
  __device__ __forceinline__ TileVector(int tid, int l) {
    const int c = tid + l * kTcThreads;
    if (kKMajor) {
      mn = c / (kTcBK / 8), k = (c % (kTcBK / 8)) * 8;
    } else {
      k = c / (kTcBM / 8), mn = (c % (kTcBM / 8)) * 8;
    }
  }
  __device__ __forceinline__ int offset() const { return kKMajor ? mn * kTcKMajorLd + k : k * kTcMnMajorLd + mn; }
};

// The source of operand tile vectors starting at (mn0, p0) of the product:
// across/along as TileVector's (mn, k) or (k, mn).
template <typename T, bool kKMajor, template <bool> class Vector>
__device__ __forceinline__ uint4 load_tile_vector(const VectorSource<T>& s, const Vector<kKMajor>& v, int64_t mn0,
                                                  int64_t p0) {
  return kKMajor ? load_vector(s, mn0 + v.mn, p0 + v.k) : load_vector(s, p0 + v.k, mn0 + v.mn);
}

template <typename T, bool kKMajor>
__device__ __forceinline__ VectorSource<T> vector_source(const T* data, int64_t mn_stride, int64_t k_stride,
                                                         int64_t mn_extent, int64_t k_extent) {
  return kKMajor ? VectorSource<T>{data, mn_stride, mn_extent, k_extent}
                 : VectorSource<T>{data, k_stride, k_extent, mn_extent};
}

// A product's operands as 16-byte vectors, A's masked (the mask is laid out
// as A, vector for vector: gemm() checks), and this thread's share of one
// step's operand tiles: the loads of the staged kernels (tensor-core and
// float32), whose Vector<kKMajor>(tid, l) places vector l of a thread in
// the tile.
template <typename T, bool kAKMajor, bool kBKMajor>
struct OperandVectors {
  VectorSource<T> a, mask, b;

  __device__ __forceinline__ explicit OperandVectors(const GemmArgs<T, float>& g)
      : a(vector_source<T, kAKMajor>(g.a.data, g.a.rs, g.a.cs, g.M, g.K)),
        mask(a),  // shares A's strides and extents
        b(vector_source<T, kBKMajor>(g.b.data, g.b.cs, g.b.rs, g.N, g.K)) {
    mask.data = g.mask.data;
  }

  // A's tile from row i0 and k p0, masked.
  template <template <bool> class Vector, int kCount>
  __device__ __forceinline__ void fetch_a(uint4 (&next)[kCount], int tid, int64_t i0, int64_t p0) const {
#pragma unroll
    for (int l = 0; l < kCount; ++l) {
      const Vector<kAKMajor> v(tid, l);
      next[l] = load_tile_vector(a, v, i0, p0);
      if (mask.data) next[l] = apply_mask<T>(next[l], load_tile_vector(mask, v, i0, p0));
    }
  }

  // B's tile from column j0 and k p0.
  template <template <bool> class Vector, int kCount>
  __device__ __forceinline__ void fetch_b(uint4 (&next)[kCount], int tid, int64_t j0, int64_t p0) const {
#pragma unroll
    for (int l = 0; l < kCount; ++l) next[l] = load_tile_vector(b, Vector<kBKMajor>(tid, l), j0, p0);
  }
};

// Half (16 deep, from kk) of a step of the staged kernel on this warp's 64x32
// outputs. B's fragments for all four column tiles first, then A's one
// 16-row tile at a time: 12 fragment registers instead of 24.
template <typename T, bool kAKMajor, bool kBKMajor>
__device__ __forceinline__ void mma_staged_half_step(const T* As, const T* Bs, int kk, int wm, int wn, int lane,
                                                     float (&acc)[kTcMI][kTcNI][4]) {
  const int matrix = lane / 8, row = lane % 8;  // the row of which ldmatrix matrix this lane addresses
  {
    uint32_t b[kTcNI][2];
#pragma unroll
    for (int pair = 0; pair < kTcNI / 2; ++pair) {  // two 8-column tiles: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, ..)
      const int n0 = wn * kTcWarpN + pair * 16;
      uint32_t r[4];
      if (kBKMajor) {
        ldmatrix_x4(r, Bs + (n0 + row + 8 * (matrix / 2)) * kTcKMajorLd + kk + 8 * (matrix % 2));
      } else {  // stored k by n: row k, 8 n's from column n
        ldmatrix_x4_trans(r, Bs + (kk + row + 8 * (matrix % 2)) * kTcMnMajorLd + n0 + 8 * (matrix / 2));
      }
      b[2 * pair][0] = r[0], b[2 * pair][1] = r[1];
      b[2 * pair + 1][0] = r[2], b[2 * pair + 1][1] = r[3];
    }
#pragma unroll
    for (int mi = 0; mi < kTcMI; ++mi) {
      const int m0 = wm * kTcWarpM + mi * 16;
      uint32_t a[4];
      if (kAKMajor) {  // matrices: (m 0-7, k 0-7), (m 8-15, k 0-7), (m 0-7, k 8-15), (m 8-15, k 8-15)
        ldmatrix_x4(a, As + (m0 + lane % 16) * kTcKMajorLd + kk + (lane / 16) * 8);
      } else {  // the same four, stored k by m: row k, 8 m's from column m
        ldmatrix_x4_trans(a, As + (kk + row + 8 * (matrix / 2)) * kTcMnMajorLd + m0 + 8 * (matrix % 2));
      }
#pragma unroll
      for (int ni = 0; ni < kTcNI; ++ni) mma_m16n8k16<T>(acc[mi][ni], a, b[ni]);
    }
  }
}

template <typename T, bool kAKMajor, bool kBKMajor>
__global__ void __launch_bounds__(kTcThreads, 2)
    gemm_tensor_core_staged_kernel(const GemmArgs<T, float> args, int64_t col_tiles) {
  const GemmArgs<T, float> g = this_slice(args);
  __shared__ __align__(16) T As[2][kTcTileElems];
  __shared__ __align__(16) T Bs[2][kTcTileElems];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp / (kTcBN / kTcWarpN), wn = warp % (kTcBN / kTcWarpN);
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kTcBM;
  const int64_t steps = (g.K + kTcBK - 1) / kTcBK;
  const OperandVectors<T, kAKMajor, kBKMajor> operands(g);

  for (int64_t tile = blockIdx.y; tile < col_tiles; tile += gridDim.y) {
    const int64_t j0 = tile * kTcBN;
    const bool want_sums = g.row_sums != nullptr && tile == 0;
    // The next step's vectors of one operand, in flight during half a step's
    // products and then stored to the other buffer (nobody reads it this
    // step): A's during the first half, B's during the second, so that only
    // one operand's vectors take registers at a time.
    uint4 next[kTcVectors];
    auto fetch_a = [&](int64_t p0) { operands.template fetch_a<TileVector>(next, tid, i0, p0); };
    auto fetch_b = [&](int64_t p0) { operands.template fetch_b<TileVector>(next, tid, j0, p0); };
    auto stash_a = [&](int buf) {
#pragma unroll
      for (int l = 0; l < kTcVectors; ++l)
        *reinterpret_cast<uint4*>(&As[buf][TileVector<kAKMajor>(tid, l).offset()]) = next[l];
    };
    auto stash_b = [&](int buf) {
#pragma unroll
      for (int l = 0; l < kTcVectors; ++l)
        *reinterpret_cast<uint4*>(&Bs[buf][TileVector<kBKMajor>(tid, l).offset()]) = next[l];
    };
    float acc[kTcMI][kTcNI][4] = {};
    float row_sum = 0.f;

    if (steps > 0) {
      fetch_a(0);
      stash_a(0);
      fetch_b(0);
      stash_b(0);
    }
    __syncthreads();
    for (int64_t s = 0; s < steps; ++s) {
      const int buf = static_cast<int>(s & 1);
      const bool more = s + 1 < steps;
      const int64_t p_next = (s + 1) * kTcBK;
      if (more) fetch_a(p_next);
      if (want_sums && tid < kTcBM) {
#pragma unroll
        for (int k = 0; k < kTcBK; ++k)
          row_sum += static_cast<float>(As[buf][kAKMajor ? tid * kTcKMajorLd + k : k * kTcMnMajorLd + tid]);
      }
      mma_staged_half_step<T, kAKMajor, kBKMajor>(As[buf], Bs[buf], 0, wm, wn, lane, acc);
      if (more) {
        stash_a(buf ^ 1);
        fetch_b(p_next);
      }
      mma_staged_half_step<T, kAKMajor, kBKMajor>(As[buf], Bs[buf], 16, wm, wn, lane, acc);
      if (more) stash_b(buf ^ 1);
      __syncthreads();
    }

    if (want_sums && tid < kTcBM && i0 + tid < g.M) store_row_sum(g, i0 + tid, row_sum);
    store_mma_tile(g, i0 + wm * kTcWarpM, j0 + wn * kTcWarpN, lane, acc);
  }
}

// float32 on a warp-tiled SIMT layout (behind the float_warp_tiled switch):
// the 128x128 tiles and 8x8 outputs per thread of the kernel above, but
// every operand read in 16-byte vectors along its contiguous dimension (k,
// or m/n: the forward's and both backward products' layouts), the mask
// applied in registers, and the threads of a warp on a 64x32 patch (8 x 4
// lanes, each with 2 x 2 blocks of 4x4 outputs 32 rows and 16 columns
// apart), so that a warp's shared-memory reads of a step are 8 distinct A
// vectors and 4 distinct B vectors: one wavefront each, the rest broadcast.
// 16-deep steps, double-buffered; the next step's A vectors are in flight
// during the first half of this step's products and B's during the second,
// so only one operand's vectors take registers at a time. Staged tiles are
// [k][m] and [k][n] in either layout (a k-contiguous operand is transposed
// on the way in: four 4-byte stores), rows padded by 4 floats.
constexpr int kWtBM = 128, kWtBN = 128, kWtBK = 16, kWtPad = 4, kWtThreads = 256;
constexpr int kWtWarpM = 64, kWtWarpN = 32;                 // warps arranged 2 x 4
constexpr int kWtLd = kWtBM + kWtPad;                       // row length of a staged tile
constexpr int kWtVectors = kWtBM * kWtBK / 4 / kWtThreads;  // float4s per operand per thread per step
static_assert(kWtBM == kWtBN, "staging maps thread vectors to A and B tiles alike");
static_assert(kWtBK % 2 == 0 && kWtVectors >= 1, "a step runs as two halves");

// Where vector l of this thread sits in a 128 x 16 operand tile: `mn` along
// the 128-long side, `k` along the 16-deep one.
template <bool kKMajor>
struct FloatTileVector {
  int mn, k;
  __device__ __forceinline__ FloatTileVector(int tid, int l) {
    const int c = tid + l * kWtThreads;
    if (kKMajor) {
      mn = c / (kWtBK / 4), k = (c % (kWtBK / 4)) * 4;
    } else {
      k = c / (kWtBM / 4), mn = (c % (kWtBM / 4)) * 4;
    }
  }
};

template <bool kKMajor>
__device__ __forceinline__ void stash_float_vector(float* tile, const FloatTileVector<kKMajor>& v, uint4 bits) {
  if (kKMajor) {  // four k's of one row: a column of the [k][mn] tile
    float e[4];
    memcpy(e, &bits, sizeof(bits));
#pragma unroll
    for (int q = 0; q < 4; ++q) tile[(v.k + q) * kWtLd + v.mn] = e[q];
  } else {
    *reinterpret_cast<uint4*>(&tile[v.k * kWtLd + v.mn]) = bits;
  }
}

// Four outputs of row i from column j on (j a multiple of 4): one 16-byte
// store with the epilogue when they are inside and C's rows allow it.
__device__ __forceinline__ void store_c4(const GemmArgs<float, float>& g, int64_t i, int64_t j, const float (&v)[4],
                                         bool vector_rows) {
  if (vector_rows && i < g.M && j + 4 <= g.N) {
    float4 out = {v[0], v[1], v[2], v[3]};
    if (g.bias) {
      out.x += g.bias[j * g.bias_stride], out.y += g.bias[(j + 1) * g.bias_stride];
      out.z += g.bias[(j + 2) * g.bias_stride], out.w += g.bias[(j + 3) * g.bias_stride];
    }
    if (g.relu) {  // NaN passes, as in torch.relu
      out.x = out.x < 0.f ? 0.f : out.x, out.y = out.y < 0.f ? 0.f : out.y;
      out.z = out.z < 0.f ? 0.f : out.z, out.w = out.w < 0.f ? 0.f : out.w;
    }
    *reinterpret_cast<float4*>(g.c + i * g.ldc + j) = out;
    return;
  }
#pragma unroll
  for (int q = 0; q < 4; ++q) store_c(g, i, j + q, v[q]);
}

// kPipelined (the float_warp_pipelined switch): the step's 16 k's unrolled,
// with the next k's fragments read from shared memory into a second set of
// registers while this k's 64 multiply-adds run, so that a warp waits on
// shared memory once per step instead of once per k (the layout that reaches
// 80-90% of cuBLAS in public SIMT kernels). Without it, the loop over k is
// not unrolled: unrolled by 2, the compiler loads two k's fragments ahead
// and spills at 128 registers; 16 warps an SM hide the latency.
// Two blocks an SM cap a thread at 128 registers: the pipelined kernel fits
// that in the forward's layout (both operands k-contiguous) but spilled 44-56
// bytes in the others (ptxas, sm_90), which therefore run one block an SM
// (159-175 registers, no spills).
template <bool kAKMajor, bool kBKMajor, bool kPipelined>
constexpr int kWtMinBlocks = kPipelined && !(kAKMajor && kBKMajor) ? 1 : 2;

template <bool kAKMajor, bool kBKMajor, bool kPipelined>
__global__ void __launch_bounds__(kWtThreads, (kWtMinBlocks<kAKMajor, kBKMajor, kPipelined>))
    gemm_float_warp_tiled_kernel(const GemmArgs<float, float> args, int64_t col_tiles) {
  GemmArgs<float, float> g = args;
  g.partial = g.partial_row_sums = nullptr;  // never split: it runs when the tiles fill the GPU
  __shared__ __align__(16) float As[2][kWtBK * kWtLd];
  __shared__ __align__(16) float Bs[2][kWtBK * kWtLd];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int wm = warp / (kWtBN / kWtWarpN), wn = warp % (kWtBN / kWtWarpN);
  const int lm = lane / 4, ln = lane % 4;
  const int a_col = wm * kWtWarpM + lm * 4, b_col = wn * kWtWarpN + ln * 4;  // this thread's first m and n in a tile
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kWtBM;
  const int64_t steps = (g.K + kWtBK - 1) / kWtBK;
  const OperandVectors<float, kAKMajor, kBKMajor> operands(g);
  const bool vector_rows = g.ldc % 4 == 0 && reinterpret_cast<uintptr_t>(g.c) % 16 == 0;

  for (int64_t tile = blockIdx.y; tile < col_tiles; tile += gridDim.y) {
    const int64_t j0 = tile * kWtBN;
    const bool want_sums = g.row_sums != nullptr && tile == 0;
    uint4 next[kWtVectors];
    auto fetch_a = [&](int64_t p0) { operands.template fetch_a<FloatTileVector>(next, tid, i0, p0); };
    auto fetch_b = [&](int64_t p0) { operands.template fetch_b<FloatTileVector>(next, tid, j0, p0); };
    auto stash_a = [&](int buf) {
#pragma unroll
      for (int l = 0; l < kWtVectors; ++l) stash_float_vector(As[buf], FloatTileVector<kAKMajor>(tid, l), next[l]);
    };
    auto stash_b = [&](int buf) {
#pragma unroll
      for (int l = 0; l < kWtVectors; ++l) stash_float_vector(Bs[buf], FloatTileVector<kBKMajor>(tid, l), next[l]);
    };
    // acc[r][c]: row a_col + (r / 4) 32 + r % 4, column b_col + (c / 4) 16 + c % 4
    float acc[8][8];
#pragma unroll
    for (int r = 0; r < 8; ++r)
#pragma unroll
      for (int c = 0; c < 8; ++c) acc[r][c] = 0.f;
    float row_sum = 0.f;
    // This thread's fragments of row k of the staged tiles: 8 m's, 8 n's.
    auto fragments = [&](const float* at, const float* bt, int k, float4(&f)[4]) {
      f[0] = *reinterpret_cast<const float4*>(&at[k * kWtLd + a_col]);
      f[1] = *reinterpret_cast<const float4*>(&at[k * kWtLd + a_col + 32]);
      f[2] = *reinterpret_cast<const float4*>(&bt[k * kWtLd + b_col]);
      f[3] = *reinterpret_cast<const float4*>(&bt[k * kWtLd + b_col + 16]);
    };
    auto multiply_add = [&](const float4(&f)[4]) {
      const float af[8] = {f[0].x, f[0].y, f[0].z, f[0].w, f[1].x, f[1].y, f[1].z, f[1].w};
      const float bf[8] = {f[2].x, f[2].y, f[2].z, f[2].w, f[3].x, f[3].y, f[3].z, f[3].w};
#pragma unroll
      for (int r = 0; r < 8; ++r)
#pragma unroll
        for (int c = 0; c < 8; ++c) acc[r][c] += af[r] * bf[c];
    };
    auto products = [&](const float* at, const float* bt, int k0) {
#pragma unroll 1
      for (int k = k0; k < k0 + kWtBK / 2; ++k) {
        float4 f[4];
        fragments(at, bt, k, f);
        multiply_add(f);
      }
    };

    if (steps > 0) {
      fetch_a(0);
      stash_a(0);
      fetch_b(0);
      stash_b(0);
    }
    __syncthreads();
    for (int64_t s = 0; s < steps; ++s) {
      const int buf = static_cast<int>(s & 1);
      const bool more = s + 1 < steps;
      const int64_t p_next = (s + 1) * kWtBK;
      if (more) fetch_a(p_next);
      if (want_sums && tid < kWtBM) {
#pragma unroll
        for (int k = 0; k < kWtBK; ++k) row_sum += As[buf][k * kWtLd + tid];
      }
      if constexpr (kPipelined) {
        float4 f[2][4];
        fragments(As[buf], Bs[buf], 0, f[0]);
#pragma unroll
        for (int k = 0; k < kWtBK; ++k) {
          if (k == kWtBK / 2 && more) {
            stash_a(buf ^ 1);  // the other buffer: nobody reads it this step
            fetch_b(p_next);
          }
          if (k + 1 < kWtBK) fragments(As[buf], Bs[buf], k + 1, f[(k + 1) % 2]);
          multiply_add(f[k % 2]);
        }
      } else {
        products(As[buf], Bs[buf], 0);
        if (more) {
          stash_a(buf ^ 1);  // the other buffer: nobody reads it this step
          fetch_b(p_next);
        }
        products(As[buf], Bs[buf], kWtBK / 2);
      }
      if (more) stash_b(buf ^ 1);
      __syncthreads();
    }

    if (want_sums && tid < kWtBM && i0 + tid < g.M) store_row_sum(g, i0 + tid, row_sum);
#pragma unroll
    for (int r = 0; r < 8; ++r) {
      const int64_t i = i0 + a_col + (r / 4) * 32 + r % 4;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const float v[4] = {acc[r][4 * half], acc[r][4 * half + 1], acc[r][4 * half + 2], acc[r][4 * half + 3]};
        store_c4(g, i, j0 + b_col + half * 16, v, vector_rows);
      }
    }
  }
}

// Split-K's second kernel: adds the slices of each output (and row sum) in
// slice order, then applies the epilogue; `g` is the caller's product.
template <typename T, typename Acc>
__global__ void split_k_sum_kernel(const GemmArgs<T, Acc> g, const Acc* partial, const Acc* partial_row_sums,
                                   int64_t slices) {
  const int64_t outputs = g.M * g.N, total = outputs + (g.row_sums ? g.M : 0);
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    Acc sum = Acc(0);
    if (e < outputs) {
      for (int64_t z = 0; z < slices; ++z) sum += partial[z * outputs + e];
      store_c(g, e / g.N, e % g.N, sum);
    } else {
      const int64_t i = e - outputs;
      for (int64_t z = 0; z < slices; ++z) sum += partial_row_sums[z * g.M + i];
      g.row_sums[i] = static_cast<T>(sum);
    }
  }
}

// The masked operand the TMA kernel reads in place of A and its mask: A's
// entries where the mask is on, else 0, written densely in A's own vector
// layout (`a` and `mask` read along it, mask laid out as A), rows `ld`
// elements apart (a multiple of 8: 16-byte aligned rows, as the TMA wants).
template <typename T>
__global__ void masked_copy_kernel(const VectorSource<T> a, const VectorSource<T> mask, T* out, int64_t ld) {
  const int64_t per_row = ld / kPerVector<T>, total = a.across_extent * per_row;
  for (int64_t v = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; v < total;
       v += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t across = v / per_row, along = (v % per_row) * kPerVector<T>;
    *reinterpret_cast<uint4*>(out + across * ld + along) =
        apply_mask<T>(load_vector(a, across, along), load_vector(mask, across, along));
  }
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

// Split-K: into how many slices of the reduction (at least kSplitMinDepth
// deep, a multiple of 64 so that sliced operands keep their 16-byte
// alignment and wgmma's slices are whole stages) a product of `tiles` output tiles is split so that the blocks
// come close to one per SM; 1 when the tiles fill the GPU already, the
// switch is off, or the reduction is too short to share.
constexpr int64_t kSplitMinDepth = 64, kSplitMaxSlices = 16, kSplitAlign = 64;
static_assert(kSplitAlign % kWgBK == 0, "wgmma's slices are whole stages");

inline int64_t split_k_slice(bool on, int64_t tiles, int64_t K, int64_t sms) {
  if (!on || tiles >= sms) return K;
  const int64_t slices = std::min({sms / tiles, K / kSplitMinDepth, kSplitMaxSlices});
  if (slices < 2) return K;
  return ((K + slices - 1) / slices + kSplitAlign - 1) / kSplitAlign * kSplitAlign;
}

// Every launch spelled out: the emulator's launch log names each kernel by
// the template arguments written at its launch.
void launch_float_warp_tiled(bool pipelined, bool a_k, bool b_k, dim3 grid, const GemmArgs<float, float>& g,
                             int64_t col_tiles, cudaStream_t stream) {
  if (pipelined) {
    if (a_k && b_k) {
      gemm_float_warp_tiled_kernel<true, true, true><<<grid, kWtThreads, 0, stream>>>(g, col_tiles);
    } else if (a_k) {
      gemm_float_warp_tiled_kernel<true, false, true><<<grid, kWtThreads, 0, stream>>>(g, col_tiles);
    } else if (b_k) {
      gemm_float_warp_tiled_kernel<false, true, true><<<grid, kWtThreads, 0, stream>>>(g, col_tiles);
    } else {
      gemm_float_warp_tiled_kernel<false, false, true><<<grid, kWtThreads, 0, stream>>>(g, col_tiles);
    }
  } else if (a_k && b_k) {
    gemm_float_warp_tiled_kernel<true, true, false><<<grid, kWtThreads, 0, stream>>>(g, col_tiles);
  } else if (a_k) {
    gemm_float_warp_tiled_kernel<true, false, false><<<grid, kWtThreads, 0, stream>>>(g, col_tiles);
  } else if (b_k) {
    gemm_float_warp_tiled_kernel<false, true, false><<<grid, kWtThreads, 0, stream>>>(g, col_tiles);
  } else {
    gemm_float_warp_tiled_kernel<false, false, false><<<grid, kWtThreads, 0, stream>>>(g, col_tiles);
  }
}

enum class TiledKernel { Portable, FloatLarge, FloatWarpTiled, TensorCore, TensorCoreAsync, TensorCoreStaged, Wgmma };

// Whether the vector kernels can read the mask: laid out as A, vector for vector.
template <typename T, typename Acc>
bool mask_read_as_a(const GemmArgs<T, Acc>& g, VectorLayout a_layout) {
  return g.mask.data == nullptr || (g.mask.rs == g.a.rs && g.mask.cs == g.a.cs &&
                                    vector_layout(g.mask.data, g.mask.rs, g.mask.cs, g.M, g.K) == a_layout);
}

// Launches the TMA-fed wgmma kernel with tiles kBN wide on `g` (K > 0, N >
// 0, both operands in a vector layout, the mask laid out as A; `slices`
// slices of g.k_slice, a multiple of kWgBK, when split):
// first, if there is a mask, the masked copy of A; then the tensor maps (an
// operand's rows along its contiguous dimension, boxes of 128 bytes of it)
// and one persistent block per SM at most.
template <typename T, int kBN>
void launch_wgmma_tma(GemmArgs<T, float> g, VectorLayout a_layout, VectorLayout b_layout, int64_t slices, int sms,
                      const at::TensorOptions& scratch, cudaStream_t stream) {
  const bool a_k = a_layout == VectorLayout::KMajor, b_k = b_layout == VectorLayout::KMajor;
  at::Tensor masked;  // lives until the kernel is queued; the caching allocator orders its reuse on the stream
  if (g.mask.data) {
    const VectorSource<T> a_src =
        a_k ? VectorSource<T>{g.a.data, g.a.rs, g.M, g.K} : VectorSource<T>{g.a.data, g.a.cs, g.K, g.M};
    VectorSource<T> m_src = a_src;
    m_src.data = g.mask.data;
    const int64_t ld = (a_src.along_extent + kPerVector<T> - 1) / kPerVector<T> * kPerVector<T>;
    masked = at::empty({a_src.across_extent * ld}, scratch.dtype(c10::CppTypeToScalarType<T>::value));
    T* out = masked.data_ptr<T>();
    constexpr int kCopyThreads = 256;
    const int64_t vectors = a_src.across_extent * (ld / kPerVector<T>);
    const unsigned blocks =
        static_cast<unsigned>(std::min<int64_t>((vectors + kCopyThreads - 1) / kCopyThreads, int64_t(sms) * 16));
    masked_copy_kernel<T><<<blocks, kCopyThreads, 0, stream>>>(a_src, m_src, out, ld);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    g.a = a_k ? StridedMatrix<T>{out, ld, 1} : StridedMatrix<T>{out, 1, ld};
    g.mask = StridedMatrix<T>{};
  }
  // Rows of the tensor map run along k (K-major: boxes of `tile_rows` rows)
  // or along m/n (boxes of 64 k-rows); a single row's stride is free (any is
  // a valid layout): the TMA wants a multiple of 16 bytes.
  auto encode = [&](CUtensorMap* map, const T* data, bool k_major, int64_t mn, int64_t mn_stride, int64_t k_stride,
                    int tile_rows) {
    const int64_t rows = k_major ? mn : g.K, inner = k_major ? g.K : mn;
    const int64_t stride =
        rows == 1 ? (inner * int64_t(sizeof(T)) + 15) / 16 * 16 : (k_major ? mn_stride : k_stride) * int64_t(sizeof(T));
    encode_tma_2d(map, data, sizeof(T), inner, rows, stride, kWgRowBytes / sizeof(T), k_major ? tile_rows : kWgBK);
  };
  CUtensorMap a_map, b_map;
  encode(&a_map, g.a.data, a_k, g.M, g.a.rs, g.a.cs, kWgBM);
  encode(&b_map, g.b.data, b_k, g.N, g.b.cs, g.b.rs, kBN);
  const int64_t r = (g.M + kWgBM - 1) / kWgBM, c = (g.N + kBN - 1) / kBN, z = slices;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(r * c * z, sms));
  constexpr int kShared = TmaTiling<kBN>::kSharedBytes;
  if (a_k && b_k) {
    gemm_wgmma_tma_kernel<T, true, true, kBN><<<blocks, kTmaThreads, kShared, stream>>>(a_map, b_map, g, r, c, z);
  } else if (a_k) {
    gemm_wgmma_tma_kernel<T, true, false, kBN><<<blocks, kTmaThreads, kShared, stream>>>(a_map, b_map, g, r, c, z);
  } else if (b_k) {
    gemm_wgmma_tma_kernel<T, false, true, kBN><<<blocks, kTmaThreads, kShared, stream>>>(a_map, b_map, g, r, c, z);
  } else {
    gemm_wgmma_tma_kernel<T, false, false, kBN><<<blocks, kTmaThreads, kShared, stream>>>(a_map, b_map, g, r, c, z);
  }
}

}  // namespace

template <typename T, typename Acc>
void gemm(const GemmArgs<T, Acc>& product, const at::TensorOptions& scratch) {
  // With N == 0 there is nothing to store, but row sums (all zero) are still due.
  if (product.M == 0 || (product.N == 0 && product.row_sums == nullptr)) return;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (product.M <= kSmallM && product.mask.data == nullptr && product.row_sums == nullptr) {
    const unsigned blocks = static_cast<unsigned>((product.N + kSmallWarps - 1) / kSmallWarps);
    gemm_small_m_kernel<T, Acc><<<blocks, kSmallWarps * 32, 0, stream>>>(product);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return;
  }
  const int sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  auto tiles_of = [&](int64_t bm, int64_t bn) {
    return ((product.M + bm - 1) / bm) * std::max<int64_t>(1, (product.N + bn - 1) / bn);
  };
  TiledKernel kernel = TiledKernel::Portable;
  [[maybe_unused]] bool wide_tiles = false;  // wgmma's 128x256 tiles
  VectorLayout a_layout = VectorLayout::None, b_layout = VectorLayout::None;
  if constexpr (kHalfType<T>) {
    if (tensor_cores_usable<T>()) {
      a_layout = a_vector_layout(product), b_layout = b_vector_layout(product);
      const bool forward_layout =
          product.mask.data == nullptr && a_layout == VectorLayout::KMajor && b_layout == VectorLayout::KMajor;
      const bool vectors =
          a_layout != VectorLayout::None && b_layout != VectorLayout::None && mask_read_as_a(product, a_layout);
      // wgmma: the TMA kernel takes every vector layout, a mask (through a
      // masked copy), row sums and split-K, but no empty operand (a tensor
      // map has no zero extent). wgmma_wide alone: only where its tiles fill the GPU.
      wide_tiles = cuda_experimental(kWgmmaWide) && tiles_of(kWgBM, 256) >= sms;  // then never split
      if (vectors && product.K > 0 && product.N > 0 && (cuda_experimental(kWgmma) || wide_tiles) &&
          wgmma_usable(scratch, stream)) {
        kernel = TiledKernel::Wgmma;
      } else if (forward_layout) {  // the forward's x and W: cp.async copies
        kernel = TiledKernel::TensorCoreAsync;
      } else if (cuda_experimental(kTensorCoreBackward) && vectors) {
        kernel = TiledKernel::TensorCoreStaged;
      } else {
        kernel = TiledKernel::TensorCore;
      }
    }
  } else if constexpr (std::is_same_v<T, float> && std::is_same_v<Acc, float>) {
    // Enough 128x128 tiles for every SM; with fewer, 64x64 tiles keep more SMs busy.
    if (tiles_of(kLBM, kLBN) >= sms) {
      kernel = TiledKernel::FloatLarge;
      if (cuda_experimental(kFloatWarpTiled)) {
        a_layout = a_vector_layout(product), b_layout = b_vector_layout(product);
        if (a_layout != VectorLayout::None && b_layout != VectorLayout::None && mask_read_as_a(product, a_layout))
          kernel = TiledKernel::FloatWarpTiled;
      }
    }
  }
  static_assert(kLBM == kWtBM && kLBN == kWtBN && kTcBM == kWtBM && kTcBN == kWtBN && kWgBM == kWtBM && kWgBN == kWtBN,
                "one large tile size");
  const bool float_large = kernel == TiledKernel::FloatLarge || kernel == TiledKernel::FloatWarpTiled;
  const int64_t bm = kernel == TiledKernel::Portable ? kBM : kLBM;
  const int64_t bn = kernel == TiledKernel::Portable ? kBN : kLBN;

  GemmArgs<T, Acc> g = product;
  at::Tensor partial;  // split-K's slices, on the caching allocator (so also inside CUDA-graph capture)
  int64_t slices = 1;
  if (!float_large) {  // the float32 128x128 kernels run only when their tiles fill the GPU
    g.k_slice = split_k_slice(cuda_split_k_on(c10::CppTypeToScalarType<T>::value), tiles_of(bm, bn), g.K, sms);
    slices = g.k_slice < g.K ? (g.K + g.k_slice - 1) / g.k_slice : 1;
  }
  if (slices > 1) {
    const int64_t rows = g.row_sums ? g.M : 0;
    partial = at::empty({slices * (g.M * g.N + rows)}, scratch.dtype(c10::CppTypeToScalarType<Acc>::value));
    g.partial = partial.data_ptr<Acc>();
    if (rows) g.partial_row_sums = g.partial + slices * g.M * g.N;
  }

  int64_t col_tiles = 0;
  dim3 grid = tile_grid(g.M, g.N, bm, bn, &col_tiles);
  grid.z = static_cast<unsigned>(slices);
  switch (kernel) {
    case TiledKernel::Portable:
      gemm_tiled_kernel<T, Acc><<<grid, kThreads, 0, stream>>>(g, col_tiles);
      break;
    case TiledKernel::FloatLarge:
      if constexpr (std::is_same_v<T, float> && std::is_same_v<Acc, float>)
        gemm_float_large_kernel<T><<<grid, kLThreads, 0, stream>>>(g, col_tiles);
      break;
    case TiledKernel::FloatWarpTiled:
      if constexpr (std::is_same_v<T, float> && std::is_same_v<Acc, float>) {
        const bool a_k = a_layout == VectorLayout::KMajor, b_k = b_layout == VectorLayout::KMajor;
        launch_float_warp_tiled(cuda_experimental(kFloatWarpPipelined), a_k, b_k, grid, g, col_tiles, stream);
      }
      break;
    default:
      if constexpr (kHalfType<T>) {
        const bool a_k = a_layout == VectorLayout::KMajor, b_k = b_layout == VectorLayout::KMajor;
        if (kernel == TiledKernel::Wgmma && wide_tiles) {
          launch_wgmma_tma<T, 256>(g, a_layout, b_layout, slices, sms, scratch, stream);
        } else if (kernel == TiledKernel::Wgmma) {
          launch_wgmma_tma<T, 128>(g, a_layout, b_layout, slices, sms, scratch, stream);
        } else if (kernel == TiledKernel::TensorCoreAsync) {
          gemm_tensor_core_async_kernel<T><<<grid, kTcThreads, 0, stream>>>(g, col_tiles);
        } else if (kernel == TiledKernel::TensorCore) {
          gemm_tensor_core_kernel<T><<<grid, kTcThreads, 0, stream>>>(g, col_tiles);
        } else if (a_k && b_k) {
          gemm_tensor_core_staged_kernel<T, true, true><<<grid, kTcThreads, 0, stream>>>(g, col_tiles);
        } else if (a_k) {
          gemm_tensor_core_staged_kernel<T, true, false><<<grid, kTcThreads, 0, stream>>>(g, col_tiles);
        } else if (b_k) {
          gemm_tensor_core_staged_kernel<T, false, true><<<grid, kTcThreads, 0, stream>>>(g, col_tiles);
        } else {
          gemm_tensor_core_staged_kernel<T, false, false><<<grid, kTcThreads, 0, stream>>>(g, col_tiles);
        }
      }
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();

  if (slices > 1) {
    const int64_t total = g.M * g.N + (g.row_sums ? g.M : 0);
    constexpr int kSumThreads = 256;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + kSumThreads - 1) / kSumThreads, 4096));
    split_k_sum_kernel<T, Acc><<<blocks, kSumThreads, 0, stream>>>(product, g.partial, g.partial_row_sums, slices);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

bool half_vector_operands(std::initializer_list<at::Tensor> operands, bool along_last_dim) {
  if (!tensor_cores_usable<c10::BFloat16>()) return false;  // compiled with the float16 ones
  for (const at::Tensor& t : operands) {
    if (t.dim() != 2 || reinterpret_cast<uintptr_t>(t.const_data_ptr()) % 16 != 0) return false;
    const int64_t per_vector = 16 / t.element_size();
    const bool rows_along_last = t.stride(1) == 1 && (t.size(0) == 1 || t.stride(0) % per_vector == 0);
    const bool rows_along_first = t.stride(0) == 1 && (t.size(1) == 1 || t.stride(1) % per_vector == 0);
    if (!(rows_along_last || (!along_last_dim && rows_along_first))) return false;
  }
  return true;
}

template void gemm<float, float>(const GemmArgs<float, float>&, const at::TensorOptions&);
template void gemm<double, double>(const GemmArgs<double, double>&, const at::TensorOptions&);
template void gemm<c10::Half, float>(const GemmArgs<c10::Half, float>&, const at::TensorOptions&);
template void gemm<c10::BFloat16, float>(const GemmArgs<c10::BFloat16, float>&, const at::TensorOptions&);

}  // namespace cuda
}  // namespace fastlayers
