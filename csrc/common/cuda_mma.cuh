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
#include <type_traits>

#if defined(FASTLAYERS_CUDA_EMULATION)
#include <cuda_emulation_mma.h>  // tests/cuda_emulation/include: the same functions on the CPU
#else
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>
#include <cuda.h>  // CUtensorMap and its enums (the encoder comes from the driver at run time)
#include <cuda_runtime.h>

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

// ------------------------------------------------------------ sm_90a wgmma
// Hopper's warpgroup matrix product, compiled only for sm_90a (the host
// dispatch runs it only where a probe kernel found sm_90a code loaded):
//
//   wgmma_fence(): before a warpgroup's first wgmma, and again after each
//       wait (the accumulators were touched);
//   wgmma_m64nNk16<T, N, kAMnMajor, kBMnMajor>(d, a, b, accumulate): the
//       128 threads of a warpgroup start d[64xN] = a[64x16] * b[16xN] (+ d
//       if accumulate), a and b in shared memory, given by matrix
//       descriptors (wgmma_descriptor_* below), each K-major (the default)
//       or M/N-major (the instruction's transpose bit); float accumulators,
//       d[j] of thread t at
//       row 16 (t / 32 % 4) + t % 32 / 4 + 8 ((j % 4) / 2), column
//       8 (j / 4) + 2 (t % 4) + j % 2;
//   wgmma_commit(): closes the warpgroup's group of started products;
//   wgmma_wait<N>(): waits until at most N groups are in flight; before it,
//       neither the accumulators nor the operands' shared memory may be
//       touched;
//   fence_proxy_async_shared(): makes this thread's plain and cp.async
//       writes to shared memory visible to wgmma's reads (the async proxy),
//       once a barrier follows.
__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void fence_proxy_async_shared() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void wgmma_fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void wgmma_commit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void wgmma_wait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

// wgmma m64n128k16 and m64n256k16 with float accumulators and both operands
// from shared memory, for the PTX element type `type` ("bf16" or "f16"); the
// last two operands are the transpose immediates (1: the operand is
// M/N-major).
#define FASTLAYERS_WGMMA_M64N128K16(type)                                                                           \
  asm volatile(                                                                                                     \
      "{\n"                                                                                                         \
      ".reg .pred p;\n"                                                                                             \
      "setp.ne.b32 p, %66, 0;\n"                                                                                    \
      "wgmma.mma_async.sync.aligned.m64n128k16.f32." type "." type                                                  \
      " "                                                                                                           \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                                     \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "                            \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "                            \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "                           \
      "%64, %65, p, 1, 1, %67, %68;\n"                                                                              \
      "}\n"                                                                                                         \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),      \
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),     \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),     \
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),     \
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),     \
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),     \
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])                   \
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)), "n"(int(kAMnMajor)), "n"(int(kBMnMajor)))

#define FASTLAYERS_WGMMA_M64N256K16(type)                                                                            \
  asm volatile(                                                                                                      \
      "{\n"                                                                                                          \
      ".reg .pred p;\n"                                                                                              \
      "setp.ne.b32 p, %130, 0;\n"                                                                                    \
      "wgmma.mma_async.sync.aligned.m64n256k16.f32." type "." type                                                   \
      " "                                                                                                            \
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "                                      \
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "                             \
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "                             \
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "                             \
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "                             \
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "                             \
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "                 \
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, "            \
      "%128, %129, p, 1, 1, %131, %132;\n"                                                                           \
      "}\n"                                                                                                          \
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),  \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),       \
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),      \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),      \
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),      \
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),      \
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),      \
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]),      \
        "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]),      \
        "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]),      \
        "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]),      \
        "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]),      \
        "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), \
        "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),            \
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]),            \
        "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]),            \
        "+f"(d[126]), "+f"(d[127])                                                                                   \
      : "l"(a), "l"(b), "r"(static_cast<int>(accumulate)), "n"(int(kAMnMajor)), "n"(int(kBMnMajor)))

template <typename T, int N, bool kAMnMajor = false, bool kBMnMajor = false>
__device__ __forceinline__ void wgmma_m64nNk16(float (&d)[N / 2], uint64_t a, uint64_t b, bool accumulate) {
  static_assert(N == 128 || N == 256, "the device build has the n128 and n256 shapes");
  static_assert(std::is_same_v<T, c10::BFloat16> || std::is_same_v<T, c10::Half>, "wgmma takes half or bfloat16 here");
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  if constexpr (N == 128 && std::is_same_v<T, c10::BFloat16>) {
    FASTLAYERS_WGMMA_M64N128K16("bf16");
  } else if constexpr (N == 128) {
    FASTLAYERS_WGMMA_M64N128K16("f16");
  } else if constexpr (std::is_same_v<T, c10::BFloat16>) {
    FASTLAYERS_WGMMA_M64N256K16("bf16");
  } else {
    FASTLAYERS_WGMMA_M64N256K16("f16");
  }
#else
  __trap();
#endif
}

// setmaxnreg: a warpgroup gives up registers (the TMA producer, down to
// `count`) or claims them (the consumers, up to `count`), so that a block's
// register file goes where the accumulators are. All 128 threads of the
// warpgroup execute it.
template <int kCount>
__device__ __forceinline__ void warpgroup_release_registers() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kCount));
#endif
}
template <int kCount>
__device__ __forceinline__ void warpgroup_claim_registers() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kCount));
#endif
}

// ------------------------------------------------- sm_90 mbarriers and TMA
//   mbarrier_init(bar, count): a barrier in shared memory whose phases
//       complete after `count` arrivals and the transaction bytes expected
//       in them; fence_mbarrier_init() then a __syncthreads() publish it;
//   mbarrier_arrive(bar), mbarrier_arrive_expect_tx(bar, bytes): one
//       arrival (the second also expects `bytes` more to land);
//   mbarrier_wait(bar, parity): blocks until the phase of that parity has
//       completed (the phase before the first counts as complete, so a
//       producer's first wait on an empty stage passes with parity 1); a
//       wait of more than 10 s traps (a deadlock);
//   tma_load_2d(dst, map, c0, c1, bar): the TMA copies the box of tensor
//       map `map` at (inner c0, outer c1) into `dst` (1024-byte aligned,
//       128-byte swizzle, zeros past the tensor's edges) and completes its
//       bytes on `bar`;
//   encode_tma_2d(map, base, element_bytes, inner, outer, stride, box_inner,
//       box_outer) (host): a tensor map of a row-major matrix, rows
//       `stride` bytes apart, boxes of box_outer rows of 128 bytes.
__device__ __forceinline__ void mbarrier_init(uint64_t* bar, unsigned count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(bar)), "r"(count) : "memory");
#endif
}

__device__ __forceinline__ void fence_mbarrier_init() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void mbarrier_arrive(uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(shared_address(bar)) : "memory");
#endif
}

__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint64_t* bar, unsigned bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_address(bar)), "r"(bytes)
               : "memory");
#endif
}

// A phase that has not completed after kMbarrierDeadlockNs of waiting never
// will (a lost arrival or load: a bug): the kernel stops with a message and
// a trap, so that the process reports an error instead of hanging.
constexpr uint64_t kMbarrierDeadlockNs = 10'000'000'000ull;

__device__ __forceinline__ void mbarrier_wait(uint64_t* bar, unsigned parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  uint64_t first_miss = 0;
  while (true) {
    uint32_t done = 0;
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(shared_address(bar)), "r"(parity)
        : "memory");
    if (done) return;
    uint64_t now;
    asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(now));
    if (first_miss == 0) {
      first_miss = now;
    } else if (now - first_miss > kMbarrierDeadlockNs) {
      printf("fastlayers: block %d thread %d waited 10 s on an mbarrier phase (parity %u): deadlock, stopping\n",
             int(blockIdx.x), int(threadIdx.x), parity);
      __trap();
    }
  }
#endif
}

__device__ __forceinline__ void tma_load_2d(void* dst, const CUtensorMap* map, int c0, int c1, uint64_t* bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          shared_address(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(shared_address(bar))
      : "memory");
#else
  __trap();
#endif
}

inline void encode_tma_2d(CUtensorMap* map, const void* base, int element_bytes, uint64_t inner, uint64_t outer,
                          uint64_t outer_stride_bytes, uint32_t box_inner, uint32_t box_outer) {
  using Encode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                              const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                              CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
  static const Encode encode = [] {  // from the driver, without linking libcuda
    void* function = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
    C10_CUDA_CHECK(
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &function, 12000, cudaEnableDefault, &found));
#else
    C10_CUDA_CHECK(cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &function, cudaEnableDefault, &found));
#endif
    TORCH_CHECK(found == cudaDriverEntryPointSuccess && function != nullptr,
                "fastlayers: the CUDA driver has no cuTensorMapEncodeTiled");
    return reinterpret_cast<Encode>(function);
  }();
  TORCH_CHECK(element_bytes == 2, "fastlayers: encode_tma_2d takes 16-bit elements");
  const cuuint64_t dims[2] = {inner, outer}, strides[1] = {outer_stride_bytes};
  const cuuint32_t box[2] = {box_inner, box_outer}, element_strides[2] = {1, 1};
  const CUresult result = encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT16, 2, const_cast<void*>(base), dims, strides, box,
                                 element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                                 CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  TORCH_CHECK(result == CUDA_SUCCESS, "fastlayers: cuTensorMapEncodeTiled failed with CUresult ", int(result));
}

}  // namespace cuda
}  // namespace fastlayers

#endif  // FASTLAYERS_CUDA_EMULATION

namespace fastlayers {
namespace cuda {

// wgmma matrix descriptors (one encoding for the device and the emulator,
// which decodes them) for operand tiles in shared memory stored with the
// 128-byte swizzle: in every 1024-byte atom of 8 rows of 128 bytes, the
// 16-byte chunk c of row r sits at r * 128 + ((c ^ r % 8) * 16); tiles are
// 1024-byte aligned, and the hardware applies the swizzle to the address it
// computes from `start`. Fields: start address >> 4 (bits 0-13), leading
// byte offset >> 4 (16-29), stride byte offset >> 4 (32-45), base offset 0
// (49-51), swizzle mode 1 = 128-byte (62-63).
//
// K-major: a row holds 64 half-precision elements of k for one m (or n),
// atoms follow each other along m (stride offset 1024; the leading one is
// unused, 1 by convention); `start` is the tile plus the byte offset of the
// 16-deep k slice read (0, 32, 64, 96).
__device__ __forceinline__ uint64_t wgmma_descriptor_128b(const void* start) {
  const uint64_t address = shared_address(start);
  return ((address & 0x3ffff) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) | (uint64_t(1) << 62);
}

// M/N-major: a row holds 64 elements of m (or n) for one k, so an atom is 8
// k's of 64 m's; atoms follow each other along k (stride offset 1024), and
// the next 64 m's start `mn_block_bytes` further (leading offset); `start`
// is the tile plus the byte offset of the k slice read (16 rows: 2048 per
// 16-deep slice).
__device__ __forceinline__ uint64_t wgmma_descriptor_128b_mn_major(const void* start, uint32_t mn_block_bytes) {
  const uint64_t address = shared_address(start);
  return ((address & 0x3ffff) >> 4) | (uint64_t((mn_block_bytes >> 4) & 0x3fff) << 16) | (uint64_t(1024 >> 4) << 32) |
         (uint64_t(1) << 62);
}

}  // namespace cuda
}  // namespace fastlayers
