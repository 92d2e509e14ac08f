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
//   inner > 1: tiles of 32 columns, the rows split among a block's warps
//       and, when the tiles are too few to fill the GPU, among blocks
//       (partial sums, finalize, subtract); narrow columns (inner < 32) that
//       are many enough: one thread per column, rows read in order.
// Groups that start on 16-byte boundaries are read and written 16 bytes at a
// time (V = 16 / sizeof(T) elements), the rest one element at a time.
#include <algorithm>
#include <limits>

#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/cuda_reduce.cuh"
#include "center.h"

namespace fastlayers {
namespace {

using cuda::blocks_for;
using cuda::warp_sum;

template <typename T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

constexpr int kWarpRowMax = 1024;  // elements a warp keeps in registers (32 per lane)
constexpr int kBlock = 256;
constexpr int64_t kChunk = 8192;  // elements per partial sum of a long group
constexpr int64_t kOneBlockMax = int64_t(1) << 16;

// V elements of T, loaded and stored as one 16-byte (or narrower) access.
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// This thread's share (threads stride by kBlock) of the sum of (x[i] - shift)
// over i in [begin, end); with V > 1, x and begin are multiples of V
// elements apart from a 16-byte boundary, and a tail shorter than V is read
// one element at a time.
template <int V, typename T, typename A>
__device__ __forceinline__ A shifted_sum(const T* x, int64_t begin, int64_t end, A shift) {
  A sum = A(0);
  int64_t i = begin + static_cast<int64_t>(threadIdx.x) * V;
  if constexpr (V > 1) {
    for (; i + V <= end; i += int64_t(kBlock) * V) {
      const Pack<T, V> p = *reinterpret_cast<const Pack<T, V>*>(x + i);
#pragma unroll
      for (int e = 0; e < V; ++e) sum += static_cast<A>(p.v[e]) - shift;
    }
    i = begin + (end - begin) / V * V + threadIdx.x;  // the tail
  }
  for (; i < end; i += kBlock) sum += static_cast<A>(x[i]) - shift;
  return sum;
}

// y[i] = (x[i] - shift) - offset over this thread's share of [begin, end),
// with the same access pattern as shifted_sum.
template <int V, typename T, typename A>
__device__ __forceinline__ void store_centered(const T* x, T* y, int64_t begin, int64_t end, A shift, A offset) {
  int64_t i = begin + static_cast<int64_t>(threadIdx.x) * V;
  if constexpr (V > 1) {
    for (; i + V <= end; i += int64_t(kBlock) * V) {
      const Pack<T, V> p = *reinterpret_cast<const Pack<T, V>*>(x + i);
      Pack<T, V> q;
#pragma unroll
      for (int e = 0; e < V; ++e) q.v[e] = static_cast<T>((static_cast<A>(p.v[e]) - shift) - offset);
      *reinterpret_cast<Pack<T, V>*>(y + i) = q;
    }
    i = begin + (end - begin) / V * V + threadIdx.x;
  }
  for (; i < end; i += kBlock) y[i] = static_cast<T>((static_cast<A>(x[i]) - shift) - offset);
}

// Lane l holds the packs l, l + 32, ... of its row (V elements each) in
// registers: one read and one write per element.
template <int V, typename T>
__global__ void __launch_bounds__(kBlock) center_rows_warp_kernel(const T* x, T* y, int64_t outer, int reduce) {
  using A = Acc<T>;
  constexpr int kPacks = kWarpRowMax / 32 / V;  // per lane
  const int lane = threadIdx.x % 32;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (kBlock / 32) + threadIdx.x / 32;
  if (row >= outer) return;
  const T* xr = x + row * reduce;
  const A shift = center_shift(static_cast<A>(xr[0]));
  A v[kPacks][V];
  A sum = A(0);
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int i = (lane + 32 * k) * V;
    if (i < reduce) {  // reduce is a multiple of V
      const Pack<T, V> p = *reinterpret_cast<const Pack<T, V>*>(xr + i);
#pragma unroll
      for (int e = 0; e < V; ++e) v[k][e] = static_cast<A>(p.v[e]) - shift, sum += v[k][e];
    }
  }
  const A mean_shifted = warp_sum(sum) / static_cast<A>(reduce);
  T* yr = y + row * reduce;
#pragma unroll
  for (int k = 0; k < kPacks; ++k) {
    const int i = (lane + 32 * k) * V;
    if (i < reduce) {
      Pack<T, V> q;
#pragma unroll
      for (int e = 0; e < V; ++e) q.v[e] = static_cast<T>(v[k][e] - mean_shifted);
      *reinterpret_cast<Pack<T, V>*>(yr + i) = q;
    }
  }
}

// One block per group of `reduce` contiguous elements: sum, then subtract.
template <int V, typename T>
__global__ void __launch_bounds__(kBlock) center_rows_block_kernel(const T* x, T* y, int64_t reduce) {
  using A = Acc<T>;
  const T* xr = x + static_cast<int64_t>(blockIdx.x) * reduce;
  T* yr = y + static_cast<int64_t>(blockIdx.x) * reduce;
  const A shift = center_shift(static_cast<A>(xr[0]));
  const A offset =
      cuda::block_sum<kBlock>(shifted_sum<V>(xr, 0, reduce, shift)) / static_cast<A>(reduce);  // mean - shift: small
  store_centered<V>(xr, yr, 0, reduce, shift, offset);
}

// partial[o * chunks + c] = sum of (x - shift_o) over chunk c of group o.
template <int V, typename T>
__global__ void __launch_bounds__(kBlock)
    partial_sums_kernel(const T* x, int64_t reduce, int64_t chunks, Acc<T>* partial) {
  using A = Acc<T>;
  const int64_t c = blockIdx.x, o = blockIdx.y;
  const T* xr = x + o * reduce;
  const A sum = cuda::block_sum<kBlock>(
      shifted_sum<V>(xr, c * kChunk, std::min(reduce, (c + 1) * kChunk), center_shift(static_cast<A>(xr[0]))));
  if (threadIdx.x == 0) partial[o * chunks + c] = sum;
}

// offset[o] = mean_o - shift_o = sum of group o's partials / reduce, in a
// fixed order.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    finalize_offset_kernel(int64_t reduce, int64_t chunks, const Acc<T>* partial, Acc<T>* offset) {
  using A = Acc<T>;
  const int64_t o = blockIdx.x;
  A sum = A(0);
  for (int64_t c = threadIdx.x; c < chunks; c += kBlock) sum += partial[o * chunks + c];
  sum = cuda::block_sum<kBlock>(sum);
  if (threadIdx.x == 0) offset[o] = sum / static_cast<A>(reduce);
}

// y = (x - shift) - offset: the rounding of shift + offset never enters.
template <int V, typename T>
__global__ void __launch_bounds__(kBlock)
    subtract_offset_kernel(const T* x, T* y, int64_t reduce, const Acc<T>* offset) {
  using A = Acc<T>;
  const int64_t c = blockIdx.x, o = blockIdx.y;
  const T* xr = x + o * reduce;
  store_centered<V>(xr, y + o * reduce, c * kChunk, std::min(reduce, (c + 1) * kChunk),
                    center_shift(static_cast<A>(xr[0])), offset[o]);
}

// One thread per (outer, inner) column, rows read in order: for narrow
// columns (inner < 32) when there are enough of them to fill the GPU.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    center_column_per_thread_kernel(const T* x, T* y, int64_t outer, int64_t reduce, int64_t inner) {
  using A = Acc<T>;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
  if (t >= outer * inner) return;
  const int64_t o = t / inner, i = t % inner;
  const T* xc = x + o * reduce * inner + i;
  T* yc = y + o * reduce * inner + i;
  const A shift = center_shift(static_cast<A>(xc[0]));
  A sum = A(0);
  for (int64_t r = 0; r < reduce; ++r) sum += static_cast<A>(xc[r * inner]) - shift;
  const A offset = sum / static_cast<A>(reduce);
  for (int64_t r = 0; r < reduce; ++r) yc[r * inner] = static_cast<T>((static_cast<A>(xc[r * inner]) - shift) - offset);
}

// Column tiles: a block takes 32 consecutive columns of one outer index
// (each warp reads 32 consecutive elements of a row) and splits the rows
// among its 8 warps; blockIdx.y splits them further into chunks when the
// tiles alone cannot fill the GPU (few, long columns).
constexpr int kColumnTile = 32;
constexpr int kColumnSlices = kBlock / kColumnTile;
constexpr int64_t kColumnChunkMinRows = 64;

struct ColumnTile {
  int64_t o, col;  // this thread's column
  int64_t base;    // offset of the column's first row
  bool active;     // col < inner (the last tile may be partial)
  __device__ ColumnTile(int64_t reduce, int64_t inner, int64_t col_tiles)
      : o(blockIdx.x / col_tiles), col((blockIdx.x % col_tiles) * kColumnTile + threadIdx.x % kColumnTile) {
    active = col < inner;
    base = o * reduce * inner + col;
  }
};

// Rows a thread reads before it uses them: a warp's 128-byte row segments
// are small, so several must be in flight to keep the memory system busy.
constexpr int kColumnUnroll = 4;

// This thread's share of the sum of (x - shift) over rows [r0, r1) of its
// column: rows r0 + slice + 8 j, kColumnUnroll independent loads at a time,
// added in a fixed order.
template <typename T, typename A>
__device__ __forceinline__ A column_share(const T* xc, int64_t inner, int64_t r0, int64_t r1, A shift) {
  A sums[kColumnUnroll] = {};
  int64_t r = r0 + threadIdx.x / kColumnTile;
  for (; r + (kColumnUnroll - 1) * kColumnSlices < r1; r += kColumnUnroll * kColumnSlices) {
    T v[kColumnUnroll];
#pragma unroll
    for (int u = 0; u < kColumnUnroll; ++u) v[u] = xc[(r + u * kColumnSlices) * inner];
#pragma unroll
    for (int u = 0; u < kColumnUnroll; ++u) sums[u] += static_cast<A>(v[u]) - shift;
  }
  for (; r < r1; r += kColumnSlices) sums[0] += static_cast<A>(xc[r * inner]) - shift;
  A sum = A(0);
#pragma unroll
  for (int u = 0; u < kColumnUnroll; ++u) sum += sums[u];
  return sum;
}

// The 8 row slices' shares of each column added in a fixed order; every
// thread of the column gets the total.
template <typename A>
__device__ A column_total(A share) {
  __shared__ A shares[kColumnSlices][kColumnTile];
  shares[threadIdx.x / kColumnTile][threadIdx.x % kColumnTile] = share;
  __syncthreads();
  A total = A(0);
#pragma unroll
  for (int s = 0; s < kColumnSlices; ++s) total += shares[s][threadIdx.x % kColumnTile];
  __syncthreads();  // the slots may be reused by a next call
  return total;
}

template <typename T, typename A>
__device__ __forceinline__ void column_store(const T* xc, T* yc, int64_t inner, int64_t r0, int64_t r1, A shift,
                                             A offset) {
  int64_t r = r0 + threadIdx.x / kColumnTile;
  for (; r + (kColumnUnroll - 1) * kColumnSlices < r1; r += kColumnUnroll * kColumnSlices) {
    T v[kColumnUnroll];
#pragma unroll
    for (int u = 0; u < kColumnUnroll; ++u) v[u] = xc[(r + u * kColumnSlices) * inner];
#pragma unroll
    for (int u = 0; u < kColumnUnroll; ++u)
      yc[(r + u * kColumnSlices) * inner] = static_cast<T>((static_cast<A>(v[u]) - shift) - offset);
  }
  for (; r < r1; r += kColumnSlices) yc[r * inner] = static_cast<T>((static_cast<A>(xc[r * inner]) - shift) - offset);
}

// The whole column in one block: sum, then subtract (the second read of a
// tile mostly comes from L2).
template <typename T>
__global__ void __launch_bounds__(kBlock)
    center_column_tiles_kernel(const T* x, T* y, int64_t reduce, int64_t inner, int64_t col_tiles) {
  using A = Acc<T>;
  const ColumnTile c(reduce, inner, col_tiles);
  const A shift = c.active ? center_shift(static_cast<A>(x[c.base])) : A(0);
  const A share = c.active ? column_share(x + c.base, inner, 0, reduce, shift) : A(0);
  const A offset = column_total(share) / static_cast<A>(reduce);
  if (c.active) column_store(x + c.base, y + c.base, inner, 0, reduce, shift, offset);
}

// partial[(o * chunks + chunk) * inner + col]: chunk blockIdx.y of a column.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    column_partial_sums_kernel(const T* x, int64_t reduce, int64_t inner, int64_t col_tiles, int64_t rows_per_chunk,
                               Acc<T>* partial) {
  using A = Acc<T>;
  const ColumnTile c(reduce, inner, col_tiles);
  const int64_t r0 = blockIdx.y * rows_per_chunk, r1 = std::min(reduce, r0 + rows_per_chunk);
  const A share = c.active ? column_share(x + c.base, inner, r0, r1, center_shift(static_cast<A>(x[c.base]))) : A(0);
  const A total = column_total(share);
  if (c.active && threadIdx.x < kColumnTile) partial[(c.o * gridDim.y + blockIdx.y) * inner + c.col] = total;
}

// offset[o * inner + col] = the column's partials added in a fixed order / reduce.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    column_finalize_kernel(int64_t outer, int64_t reduce, int64_t inner, int64_t chunks, const Acc<T>* partial,
                           Acc<T>* offset) {
  using A = Acc<T>;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
  if (t >= outer * inner) return;
  const int64_t o = t / inner, col = t % inner;
  A sum = A(0);
  for (int64_t k = 0; k < chunks; ++k) sum += partial[(o * chunks + k) * inner + col];
  offset[t] = sum / static_cast<A>(reduce);
}

template <typename T>
__global__ void __launch_bounds__(kBlock)
    column_subtract_kernel(const T* x, T* y, int64_t reduce, int64_t inner, int64_t col_tiles, int64_t rows_per_chunk,
                           const Acc<T>* offset) {
  using A = Acc<T>;
  const ColumnTile c(reduce, inner, col_tiles);
  if (!c.active) return;
  const int64_t r0 = blockIdx.y * rows_per_chunk, r1 = std::min(reduce, r0 + rows_per_chunk);
  column_store(x + c.base, y + c.base, inner, r0, r1, center_shift(static_cast<Acc<T>>(x[c.base])),
               offset[c.o * inner + c.col]);
}

// A few long groups (the whole tensor): partial sums per chunk, a finalize
// kernel, a subtract kernel; the offsets stay on the device.
template <typename T>
void launch_long_groups(const T* x, T* y, int64_t outer, int64_t reduce, bool packed, const at::TensorOptions& options,
                        cudaStream_t stream) {
  using A = Acc<T>;
  constexpr int kV = 16 / sizeof(T);
  TORCH_CHECK(outer <= 65535, kCenter, ": too many long groups (", outer, ") for one launch");
  const int64_t chunks = (reduce + kChunk - 1) / kChunk;
  at::Tensor scratch = at::empty({outer * chunks + outer}, options.dtype(c10::CppTypeToScalarType<A>::value));
  A* partial = scratch.data_ptr<A>();
  A* offset = partial + outer * chunks;
  const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(outer));
  if (packed) {
    partial_sums_kernel<kV, T><<<grid, kBlock, 0, stream>>>(x, reduce, chunks, partial);
  } else {
    partial_sums_kernel<1, T><<<grid, kBlock, 0, stream>>>(x, reduce, chunks, partial);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  finalize_offset_kernel<T><<<static_cast<unsigned>(outer), kBlock, 0, stream>>>(reduce, chunks, partial, offset);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (packed) {
    subtract_offset_kernel<kV, T><<<grid, kBlock, 0, stream>>>(x, y, reduce, offset);
  } else {
    subtract_offset_kernel<1, T><<<grid, kBlock, 0, stream>>>(x, y, reduce, offset);
  }
}

// Centering along a middle or leading dim (inner > 1).
template <typename T>
void launch_columns(const T* x, T* y, int64_t outer, int64_t reduce, int64_t inner, const at::TensorOptions& options,
                    cudaStream_t stream) {
  using A = Acc<T>;
  const int64_t sms = at::cuda::getCurrentDeviceProperties()->multiProcessorCount;
  if (inner < kColumnTile && outer * inner >= 2 * sms * kBlock) {
    center_column_per_thread_kernel<T>
        <<<blocks_for(outer * inner, kBlock), kBlock, 0, stream>>>(x, y, outer, reduce, inner);
    return;
  }
  const int64_t col_tiles = (inner + kColumnTile - 1) / kColumnTile;
  const int64_t tiles = outer * col_tiles;
  TORCH_CHECK(tiles <= std::numeric_limits<int>::max(), kCenter, ": too many columns (", outer * inner,
              ") for one launch");
  int64_t chunks = 1;
  if (tiles < 2 * sms) {  // few tiles: split the rows too, aiming at 8 blocks per SM
    chunks = std::min(
        {(8 * sms + tiles - 1) / tiles, (reduce + kColumnChunkMinRows - 1) / kColumnChunkMinRows, int64_t(65535)});
  }
  if (chunks <= 1) {
    center_column_tiles_kernel<T><<<static_cast<unsigned>(tiles), kBlock, 0, stream>>>(x, y, reduce, inner, col_tiles);
    return;
  }
  const int64_t rows_per_chunk = (reduce + chunks - 1) / chunks;
  chunks = (reduce + rows_per_chunk - 1) / rows_per_chunk;
  at::Tensor scratch = at::empty({outer * inner * (chunks + 1)}, options.dtype(c10::CppTypeToScalarType<A>::value));
  A* partial = scratch.data_ptr<A>();
  A* offset = partial + outer * inner * chunks;
  const dim3 grid(static_cast<unsigned>(tiles), static_cast<unsigned>(chunks));
  column_partial_sums_kernel<T><<<grid, kBlock, 0, stream>>>(x, reduce, inner, col_tiles, rows_per_chunk, partial);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  column_finalize_kernel<T>
      <<<blocks_for(outer * inner, kBlock), kBlock, 0, stream>>>(outer, reduce, inner, chunks, partial, offset);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  column_subtract_kernel<T><<<grid, kBlock, 0, stream>>>(x, y, reduce, inner, col_tiles, rows_per_chunk, offset);
}

at::Tensor center_cuda(const at::Tensor& input, at::OptionalIntArrayRef dim) {
  const std::vector<int64_t> dims = center_dims(input, dim);
  const c10::cuda::CUDAGuard guard(input.device());
  const CenterLayout l = center_layout(input, dims);
  at::Tensor out = at::empty(l.x.sizes(), l.x.options());
  if (out.numel() == 0) return center_result(out, l);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t outer = l.outer, reduce = l.reduce, inner = l.inner;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "center_cuda", [&] {
    constexpr int kV = 16 / sizeof(scalar_t);  // elements per 16-byte access
    const scalar_t* x = l.x.const_data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    // Every group starts on a 16-byte boundary: both bases aligned and the
    // group length a multiple of kV (or a single group).
    const bool packed = reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(y) % 16 == 0 &&
                        (reduce % kV == 0 || outer == 1);
    if (inner > 1) {
      launch_columns<scalar_t>(x, y, outer, reduce, inner, l.x.options(), stream);
    } else if (reduce <= kWarpRowMax) {
      const unsigned blocks = blocks_for(outer, kBlock / 32);
      if (packed && reduce % kV == 0) {
        center_rows_warp_kernel<kV, scalar_t><<<blocks, kBlock, 0, stream>>>(x, y, outer, static_cast<int>(reduce));
      } else {
        center_rows_warp_kernel<1, scalar_t><<<blocks, kBlock, 0, stream>>>(x, y, outer, static_cast<int>(reduce));
      }
    } else if (outer * reduce <= kOneBlockMax ||
               outer >= 4 * at::cuda::getCurrentDeviceProperties()->multiProcessorCount) {
      // One block per group: a single launch; enough groups fill the GPU.
      const unsigned blocks = static_cast<unsigned>(outer);
      if (packed) {
        center_rows_block_kernel<kV, scalar_t><<<blocks, kBlock, 0, stream>>>(x, y, reduce);
      } else {
        center_rows_block_kernel<1, scalar_t><<<blocks, kBlock, 0, stream>>>(x, y, reduce);
      }
    } else {
      launch_long_groups<scalar_t>(x, y, outer, reduce, packed, l.x.options(), stream);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return center_result(out, l);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CUDA, m) { m.impl("center", &center_cuda); }

}  // namespace fastlayers
