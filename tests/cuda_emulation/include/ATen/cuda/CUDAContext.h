// CUDA emulation (see ../../../emulator.h): the device an H100 reports.
#pragma once
#include <c10/cuda/CUDAStream.h>

struct cudaDeviceProp {
  int major = 9, minor = 0;
  int multiProcessorCount = 132;
  size_t sharedMemPerBlock = 48 * 1024;
  size_t sharedMemPerBlockOptin = 227 * 1024;
};

enum cudaError_t { cudaSuccess = 0 };
struct cudaFuncAttributes {
  int ptxVersion = 90, binaryVersion = 90;
};
template <typename Function>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attributes, Function) {
  *attributes = cudaFuncAttributes{};
  return cudaSuccess;
}

namespace at {
namespace cuda {
inline cudaDeviceProp* getCurrentDeviceProperties() {
  static cudaDeviceProp props;
  return &props;
}
using c10::cuda::getCurrentCUDAStream;
}  // namespace cuda
}  // namespace at
