// CUDA emulation (see ../../../emulator.h): the device the kernels see. Its
// properties are a parameter (emu::device_profile(), set through the
// emulator_set_device op of self_test.cu), so that the kernels' branches on
// the architecture and on the SM count run under more than one GPU. The
// default is an H100's: sm_90 with 132 SMs.
#pragma once
#include <c10/cuda/CUDAStream.h>

struct cudaDeviceProp {
  int major = 9, minor = 0;
  int multiProcessorCount = 132;
};

namespace emu {
inline cudaDeviceProp& device_profile() {
  static cudaDeviceProp props;
  return props;
}
}  // namespace emu

enum cudaError_t { cudaSuccess = 0 };
// The code a kernel runs was compiled for the emulated device itself.
struct cudaFuncAttributes {
  int ptxVersion = 0;
};
template <typename Function>
cudaError_t cudaFuncGetAttributes(cudaFuncAttributes* attributes, Function) {
  attributes->ptxVersion = emu::device_profile().major * 10 + emu::device_profile().minor;
  return cudaSuccess;
}

enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
template <typename Function>
cudaError_t cudaFuncSetAttribute(Function kernel, cudaFuncAttribute attribute, int value) {
  if (attribute != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || size_t(value) > emu::kMaxSharedOptIn)
    throw std::runtime_error("CUDA emulation: cudaFuncSetAttribute: unsupported attribute or value");
  for (auto& entry : emu::shared_opt_ins())
    if (entry.first == reinterpret_cast<const void*>(kernel)) {
      entry.second = size_t(value);
      return cudaSuccess;
    }
  emu::shared_opt_ins().emplace_back(reinterpret_cast<const void*>(kernel), size_t(value));
  return cudaSuccess;
}

// Emulated streams are never being captured into a CUDA graph.
enum cudaStreamCaptureStatus { cudaStreamCaptureStatusNone = 0, cudaStreamCaptureStatusActive = 1 };
inline cudaError_t cudaStreamIsCapturing(cudaStream_t, cudaStreamCaptureStatus* status) {
  *status = cudaStreamCaptureStatusNone;
  return cudaSuccess;
}

namespace at {
namespace cuda {
inline cudaDeviceProp* getCurrentDeviceProperties() { return &emu::device_profile(); }
using c10::cuda::getCurrentCUDAStream;
}  // namespace cuda
}  // namespace at
