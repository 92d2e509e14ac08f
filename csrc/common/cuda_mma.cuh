// The sm_80+ instructions the half/bfloat16 GEMM uses, as small functions so
// that the CPU emulator of tests/ can stand in for them with the same
// contract:
//
//   ldmatrix_x4(r, row): the warp loads four 8x8 matrices of 16-bit
//       elements from shared memory; lanes 8i..8i+7 give the addresses of
//       matrix i's rows (16-byte aligned), and lane l receives in r[i] the
//       elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1) of matrix i (low half first).
//   ldmatrix_x4_trans(r, row): the same with each matrix transposed on the
//       way: lane l receives in r[i] the elements (2(l%4), l/4) and
//       (2(l%4)+1, l/4) of matrix i (the rows hold m or n, the columns k:
//       an operand stored contiguous along m or n becomes mma's fragment).
//   mma_m16n8k16<T>(d, a, b): d[16x8] += a[16x16] * b[16x8], T = half or
//       bfloat16, float accumulators, in the PTX ISA's fragment layouts:
//       a: r[l] holds row lane/4 + 8(l%2), columns 2(lane%4) + 8(l/2), +1;
//       b: r[l] holds rows (k) 2(lane%4) + 8l, +1 of column lane/4;
//       d: d[l] is row lane/4 + 8(l/2), column 2(lane%4) + (l%2).
//   cp_async_16(dst, src, bytes): this thread starts an asynchronous copy of
//       `bytes` (0..16) bytes from global src to shared dst (both 16-byte
//       aligned), zero-filling dst up to 16 bytes; cp_async_commit() closes
//       the thread's current group of copies; cp_async_wait<N>() waits until
//       at most N of its committed groups are still in flight. Other
//       threads see the data only after a barrier that follows the wait.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#if defined(FASTLAYERS_CUDA_EMULATION)
#include <cuda_emulation_mma.h>  // tests/cuda_emulation/include: the same functions on the CPU
#else

namespace fastlayers {
namespace cuda {

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
#else
  __trap();  // never launched below sm_80: the host dispatch checks the device
#endif
}

__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
#else
  __trap();
#endif
}

template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);

template <>
__device__ __forceinline__ void mma_m16n8k16<c10::Half>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();
#endif
}

template <>
__device__ __forceinline__ void mma_m16n8k16<c10::BFloat16>(float (&d)[4], const uint32_t (&a)[4],
                                                            const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  __trap();
#endif
}

__device__ __forceinline__ void cp_async_16(void* dst, const void* src, int bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned address = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(__cvta_generic_to_global(src)),
               "r"(bytes)
               : "memory");
#else
  __trap();
#endif
}

__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

}  // namespace cuda
}  // namespace fastlayers

#endif  // FASTLAYERS_CUDA_EMULATION
