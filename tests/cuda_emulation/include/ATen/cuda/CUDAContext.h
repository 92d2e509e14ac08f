// CUDA emulation (see ../../../emulator.h): the device an H100 reports.
#pragma once
#include <c10/cuda/CUDAStream.h>

struct cudaDeviceProp {
  int major = 9, minor = 0;
  int multiProcessorCount = 132;
  size_t sharedMemPerBlock = 48 * 1024;
  size_t sharedMemPerBlockOptin = 227 * 1024;
};

namespace at {
namespace cuda {
inline cudaDeviceProp* getCurrentDeviceProperties() {
  static cudaDeviceProp props;
  return &props;
}
using c10::cuda::getCurrentCUDAStream;
}  // namespace cuda
}  // namespace at
