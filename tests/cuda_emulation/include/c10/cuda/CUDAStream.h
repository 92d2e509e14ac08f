// CUDA emulation (see ../../../emulator.h): the current stream is a token.
#pragma once
#include <c10/core/Device.h>

namespace c10 {
namespace cuda {
struct CUDAStream {
  operator cudaStream_t() const { return nullptr; }
};
inline CUDAStream getCurrentCUDAStream(c10::DeviceIndex = -1) { return {}; }
inline c10::DeviceIndex current_device() { return 0; }  // the one emulated device
}  // namespace cuda
}  // namespace c10
