// Kernels that break the CUDA rules the emulator promises to catch, and one
// that keeps them, as the op fastlayers_emulated::emulator_self_test(name):
// tests/test_cuda_emulated.py checks that each bad one raises its error.
// Built only into the emulated library (build.py), never into fastlayers.
#include <ATen/core/Tensor.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "csrc/common/cuda_mma.cuh"  // the copy build.py writes beside this file

namespace {

__global__ void block_sum_kernel(int64_t* out) {  // keeps the rules
  __shared__ int64_t partial[64];
  partial[threadIdx.x] = threadIdx.x;
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t s = 0;
    for (int i = 0; i < 64; ++i) s += partial[i];
    *out = s;
  }
}

__global__ void warp_sum_kernel(int64_t* out) {  // keeps the rules
  int64_t v = threadIdx.x;
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  if (threadIdx.x == 0) *out = v;
}

__global__ void shared_read_before_write_kernel(int64_t* out) {
  __shared__ int64_t never_written;
  if (threadIdx.x == 0) *out = never_written;  // the emulator's poison: all bits set
}

__global__ void barrier_after_exit_kernel() {
  if (threadIdx.x < 16) return;
  __syncthreads();
}

__global__ void barrier_in_half_the_block_kernel() {
  if (threadIdx.x < 32) __syncthreads();
  __syncthreads();
}

__global__ void shuffle_in_half_a_warp_kernel(int64_t* out) {
  int64_t v = threadIdx.x;
  if (threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
  out[threadIdx.x] = v;
}

__global__ void shuffle_after_lane_exit_kernel() {
  if (threadIdx.x == 3) return;
  __shfl_xor_sync(0xffffffffu, 1, 1);
}

__global__ void empty_kernel() {}

__global__ void wgmma_without_fence_kernel() {  // one warpgroup; the operands' values do not matter
  __shared__ __align__(1024) unsigned char tiles[(64 + 128) * 128];
  float acc[64] = {};
  const uint64_t a = fastlayers::cuda::wgmma_descriptor_128b(tiles);
  const uint64_t b = fastlayers::cuda::wgmma_descriptor_128b(tiles + 64 * 128);
  fastlayers::cuda::wgmma_m64nNk16<c10::BFloat16, 128>(acc, a, b, true);
}

__global__ void mbarrier_never_completes_kernel() {  // expects two arrivals, gets one
  __shared__ uint64_t bar;
  if (threadIdx.x == 0) fastlayers::cuda::mbarrier_init(&bar, 2);
  __syncthreads();
  if (threadIdx.x == 0) fastlayers::cuda::mbarrier_arrive(&bar);
  fastlayers::cuda::mbarrier_wait(&bar, 0);
}

__global__ void mbarrier_handoff_kernel(int64_t* out) {  // keeps the rules: thread 32 waits for thread 0's word
  __shared__ uint64_t bar;
  __shared__ int64_t word;
  if (threadIdx.x == 0) fastlayers::cuda::mbarrier_init(&bar, 1);
  __syncthreads();
  if (threadIdx.x == 32) {
    fastlayers::cuda::mbarrier_wait(&bar, 0);  // blocks if it runs before thread 0 arrives (the reverse order)
    *out = word;
  }
  if (threadIdx.x == 0) {
    word = 42;
    fastlayers::cuda::mbarrier_arrive(&bar);
  }
}

__global__ void large_shared_kernel(int64_t* out) {
  extern __shared__ int64_t large[];
  large[threadIdx.x] = threadIdx.x;
  __syncthreads();
  if (threadIdx.x == 0) *out = large[31];
}

int64_t emulator_self_test(const std::string& name) {
  int64_t result[64] = {0};
  if (name == "block_sum") {
    block_sum_kernel<<<1, 64>>>(result);
  } else if (name == "warp_sum") {
    warp_sum_kernel<<<1, 32>>>(result);
  } else if (name == "shared_read_before_write") {
    shared_read_before_write_kernel<<<1, 32>>>(result);
  } else if (name == "barrier_after_exit") {
    barrier_after_exit_kernel<<<1, 64>>>();
  } else if (name == "barrier_in_half_the_block") {
    barrier_in_half_the_block_kernel<<<1, 64>>>();
  } else if (name == "shuffle_in_half_a_warp") {
    shuffle_in_half_a_warp_kernel<<<1, 32>>>(result);
  } else if (name == "shuffle_after_lane_exit") {
    shuffle_after_lane_exit_kernel<<<1, 32>>>();
  } else if (name == "block_too_large") {
    empty_kernel<<<1, 2048>>>();
  } else if (name == "grid_too_large") {
    empty_kernel<<<dim3(1, 70000), 32>>>();
  } else if (name == "too_much_dynamic_shared_memory") {
    empty_kernel<<<1, 32, 64 * 1024>>>();
  } else if (name == "shared_within_opt_in") {
    cudaFuncSetAttribute(large_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024);
    large_shared_kernel<<<1, 32, 100 * 1024>>>(result);
  } else if (name == "shared_above_opt_in") {
    cudaFuncSetAttribute(large_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 100 * 1024);
    large_shared_kernel<<<1, 32, 101 * 1024>>>(result);
  } else if (name == "mbarrier_never_completes") {
    mbarrier_never_completes_kernel<<<1, 64>>>();
  } else if (name == "mbarrier_handoff") {
    mbarrier_handoff_kernel<<<1, 64>>>(result);
  } else if (name == "wgmma_without_fence") {
    wgmma_without_fence_kernel<<<1, 128>>>();
  } else {
    TORCH_CHECK(false, "emulator_self_test: unknown case ", name);
  }
  return result[0];
}

// Sets the emulated device's compute capability and SM count; returns the
// previous ones as [major, minor, sms].
std::vector<int64_t> emulator_set_device(int64_t major, int64_t minor, int64_t sms) {
  TORCH_CHECK(major >= 3 && minor >= 0 && minor <= 9 && sms >= 1, "emulator_set_device: no such device: sm_", major,
              minor, " with ", sms, " SMs");
  cudaDeviceProp& p = emu::device_profile();
  std::vector<int64_t> previous = {p.major, p.minor, p.multiProcessorCount};
  p.major = static_cast<int>(major), p.minor = static_cast<int>(minor), p.multiProcessorCount = static_cast<int>(sms);
  return previous;
}

// emu::counters() as [launches, blocks, mma, ldmatrix_trans, wgmma].
std::vector<int64_t> emulator_counters() {
  const emu::Counters& c = emu::counters();
  return {c.launches, c.blocks, c.mma, c.ldmatrix_trans, c.wgmma};
}

// The kernels launched since the last call, in order (and clears the log).
std::vector<std::string> emulator_launched_kernels() { return std::exchange(emu::counters().launched, {}); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastlayers_emulated, m) {
  m.def("emulator_self_test(str name) -> int", &emulator_self_test);
  m.def("emulator_set_device(int major, int minor, int sms) -> int[]", &emulator_set_device);
  m.def("emulator_counters() -> int[]", &emulator_counters);
  m.def("emulator_launched_kernels() -> str[]", &emulator_launched_kernels);
}
