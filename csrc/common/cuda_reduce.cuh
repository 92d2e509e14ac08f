// What the CUDA kernels of every op share for sums over a warp or a block,
// and the launch arithmetic that goes with them. Every sum here runs in a
// fixed order (no atomics), so the same input gives bitwise the same result.
#pragma once

#include <cstdint>

namespace fastlayers {
namespace cuda {

// Blocks of `per_block` items (threads, warps ...) that cover n items.
inline unsigned blocks_for(int64_t n, int64_t per_block) {
  return static_cast<unsigned>((n + per_block - 1) / per_block);
}

// Sum over the 32 lanes of a warp (a butterfly); every lane gets the result.
template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over a block of kThreads threads (a multiple of 32, at most 1024);
// every thread must call it and every thread gets the result. It may be
// called again at once: its shared slots are free when it returns.
template <int kThreads, typename A>
__device__ A block_sum(A v) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block_sum: kThreads must be whole warps, at most 1024");
  __shared__ A warp_sums[kThreads / 32];
  __shared__ A total;
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    A w = lane < kThreads / 32 ? warp_sums[lane] : A(0);
    w = warp_sum(w);
    if (lane == 0) total = w;
  }
  __syncthreads();
  const A result = total;
  __syncthreads();
  return result;
}

}  // namespace cuda
}  // namespace fastlayers
