// CUDA kernels of fastlayers::center over the [outer, reduce, inner] layout
// of center.h. Sums are shifted by each group's first element (a large
// common offset costs no accuracy) and accumulated in float (double for
// double) with fixed-order tree reductions: no atomics, so the same input
// gives bitwise the same output. The mean never leaves the device.
//
//   reduce <= 1024, inner == 1: one warp per group, elements kept in
//       registers: one read and one write per element, one launch.
//   a few long groups (the whole tensor): per-chunk partial sums, a
//       finalize kernel, a subtract kernel (3 launches; the second read of a
//       tensor that fits in L2 comes from L2). Small ones: one block, one launch.
//   other groups of contiguous elements: one block per group.
//   inner > 1: one thread per (outer, inner) column, rows read in order.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "center.h"

namespace fastlayers {
namespace {

template <typename T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

constexpr int kWarpRowMax = 1024;   // elements a warp keeps in registers (32 per lane)
constexpr int kBlock = 256;
constexpr int64_t kChunk = 8192;    // elements per partial sum of a long group
constexpr int64_t kOneBlockMax = int64_t(1) << 16;

template <typename A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block in a fixed order; every thread gets the result.
template <typename A>
__device__ A block_sum(A v) {
  __shared__ A warp_sums[kBlock / 32];
  __shared__ A total;
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  if (warp == 0) {
    A w = lane < kBlock / 32 ? warp_sums[lane] : A(0);
    w = warp_sum(w);
    if (lane == 0) total = w;
  }
  __syncthreads();
  const A result = total;
  __syncthreads();  // the shared slots may be reused by a next call
  return result;
}

template <typename T>
__global__ void __launch_bounds__(kBlock) center_rows_warp_kernel(const T* x, T* y, int64_t outer, int reduce) {
  using A = Acc<T>;
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kBlock / 32) + threadIdx.x / 32;
  if (row >= outer) return;
  const T* xr = x + row * reduce;
  const A shift = static_cast<A>(xr[0]);
  A v[kWarpRowMax / 32];
  A sum = A(0);
#pragma unroll
  for (int k = 0; k < kWarpRowMax / 32; ++k) {
    const int i = lane + 32 * k;
    v[k] = i < reduce ? static_cast<A>(xr[i]) - shift : A(0);
    sum += v[k];
  }
  const A mean_shifted = warp_sum(sum) / static_cast<A>(reduce);
  T* yr = y + row * reduce;
#pragma unroll
  for (int k = 0; k < kWarpRowMax / 32; ++k) {
    const int i = lane + 32 * k;
    if (i < reduce) yr[i] = static_cast<T>(v[k] - mean_shifted);
  }
}

// One block per group of `reduce` contiguous elements: sum, then subtract.
template <typename T>
__global__ void __launch_bounds__(kBlock) center_rows_block_kernel(const T* x, T* y, int64_t reduce) {
  using A = Acc<T>;
  const T* xr = x + static_cast<int64_t>(blockIdx.x) * reduce;
  T* yr = y + static_cast<int64_t>(blockIdx.x) * reduce;
  const A shift = static_cast<A>(xr[0]);
  A sum = A(0);
  for (int64_t i = threadIdx.x; i < reduce; i += kBlock) sum += static_cast<A>(xr[i]) - shift;
  const A offset = block_sum(sum) / static_cast<A>(reduce);  // mean - shift: small
  for (int64_t i = threadIdx.x; i < reduce; i += kBlock) yr[i] = static_cast<T>((static_cast<A>(xr[i]) - shift) - offset);
}

// partial[o * chunks + c] = sum of (x - shift_o) over chunk c of group o.
template <typename T>
__global__ void __launch_bounds__(kBlock) partial_sums_kernel(const T* x, int64_t reduce, int64_t chunks, Acc<T>* partial) {
  using A = Acc<T>;
  const int64_t c = blockIdx.x, o = blockIdx.y;
  const T* xr = x + o * reduce;
  const A shift = static_cast<A>(xr[0]);
  const int64_t end = std::min(reduce, (c + 1) * kChunk);
  A sum = A(0);
  for (int64_t i = c * kChunk + threadIdx.x; i < end; i += kBlock) sum += static_cast<A>(xr[i]) - shift;
  sum = block_sum(sum);
  if (threadIdx.x == 0) partial[o * chunks + c] = sum;
}

// offset[o] = mean_o - shift_o = sum of group o's partials / reduce, in a
// fixed order.
template <typename T>
__global__ void __launch_bounds__(kBlock) finalize_offset_kernel(int64_t reduce, int64_t chunks,
                                                                 const Acc<T>* partial, Acc<T>* offset) {
  using A = Acc<T>;
  const int64_t o = blockIdx.x;
  A sum = A(0);
  for (int64_t c = threadIdx.x; c < chunks; c += kBlock) sum += partial[o * chunks + c];
  sum = block_sum(sum);
  if (threadIdx.x == 0) offset[o] = sum / static_cast<A>(reduce);
}

// y = (x - shift) - offset: the rounding of shift + offset never enters.
template <typename T>
__global__ void __launch_bounds__(kBlock) subtract_offset_kernel(const T* x, T* y, int64_t reduce,
                                                                 const Acc<T>* offset) {
  using A = Acc<T>;
  const int64_t c = blockIdx.x, o = blockIdx.y;
  const A shift = static_cast<A>(x[o * reduce]), d = offset[o];
  const int64_t end = std::min(reduce, (c + 1) * kChunk);
  for (int64_t i = c * kChunk + threadIdx.x; i < end; i += kBlock)
    y[o * reduce + i] = static_cast<T>((static_cast<A>(x[o * reduce + i]) - shift) - d);
}

// One thread per (outer, inner) column: consecutive threads read
// consecutive inner elements of each row.
template <typename T>
__global__ void __launch_bounds__(kBlock) center_columns_kernel(const T* x, T* y, int64_t outer, int64_t reduce, int64_t inner) {
  using A = Acc<T>;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
  if (t >= outer * inner) return;
  const int64_t o = t / inner, i = t % inner;
  const T* xc = x + o * reduce * inner + i;
  T* yc = y + o * reduce * inner + i;
  const A shift = static_cast<A>(xc[0]);
  A sum = A(0);
  for (int64_t r = 0; r < reduce; ++r) sum += static_cast<A>(xc[r * inner]) - shift;
  const A offset = sum / static_cast<A>(reduce);
  for (int64_t r = 0; r < reduce; ++r) yc[r * inner] = static_cast<T>((static_cast<A>(xc[r * inner]) - shift) - offset);
}

unsigned blocks_for(int64_t n, int64_t per_block) { return static_cast<unsigned>((n + per_block - 1) / per_block); }

at::Tensor center_cuda(const at::Tensor& input, at::OptionalIntArrayRef dim) {
  const std::vector<int64_t> dims = center_dims(input, dim);
  const c10::cuda::CUDAGuard guard(input.device());
  const CenterLayout l = center_layout(input, dims);
  at::Tensor out = at::empty(l.x.sizes(), l.x.options());
  if (out.numel() == 0) return center_result(out, l);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t outer = l.outer, reduce = l.reduce, inner = l.inner;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "center_cuda", [&] {
    using A = Acc<scalar_t>;
    const scalar_t* x = l.x.const_data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    if (inner > 1) {
      center_columns_kernel<scalar_t><<<blocks_for(outer * inner, kBlock), kBlock, 0, stream>>>(x, y, outer, reduce, inner);
    } else if (reduce <= kWarpRowMax) {
      center_rows_warp_kernel<scalar_t><<<blocks_for(outer, kBlock / 32), kBlock, 0, stream>>>(x, y, outer, static_cast<int>(reduce));
    } else if (outer * reduce <= kOneBlockMax ||
               outer >= 4 * at::cuda::getCurrentDeviceProperties()->multiProcessorCount) {
      // One block per group: a single launch; enough groups fill the GPU.
      center_rows_block_kernel<scalar_t><<<static_cast<unsigned>(outer), kBlock, 0, stream>>>(x, y, reduce);
    } else {
      TORCH_CHECK(outer <= 65535, kCenter, ": too many long groups (", outer, ") for one launch");
      const int64_t chunks = (reduce + kChunk - 1) / kChunk;
      at::Tensor scratch = at::empty({outer * chunks + outer}, l.x.options().dtype(c10::CppTypeToScalarType<A>::value));
      A* partial = scratch.data_ptr<A>();
      A* offset = partial + outer * chunks;
      const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(outer));
      partial_sums_kernel<scalar_t><<<grid, kBlock, 0, stream>>>(x, reduce, chunks, partial);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      finalize_offset_kernel<scalar_t><<<static_cast<unsigned>(outer), kBlock, 0, stream>>>(reduce, chunks, partial, offset);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      subtract_offset_kernel<scalar_t><<<grid, kBlock, 0, stream>>>(x, y, reduce, offset);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return center_result(out, l);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CUDA, m) { m.impl("center", &center_cuda); }

}  // namespace fastlayers
