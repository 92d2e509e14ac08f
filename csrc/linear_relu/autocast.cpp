// Autocast (AMP) for linear_relu: the same policy as nn.Linear, run in the
// autocast dtype (float16/bfloat16) with float32 inputs cast on the way in;
// the casts happen above autograd, so gradients flow back to float32 weights.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "linear_relu.h"

namespace fastlayers {
namespace {

template <c10::DeviceType device>
at::Tensor linear_relu_autocast(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(device));
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device);
  return linear_relu_call(at::autocast::cached_cast(dtype, input, device),
                          at::autocast::cached_cast(dtype, weight, device),
                          at::autocast::cached_cast(dtype, bias, device));
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, AutocastCPU, m) { m.impl("linear_relu", &linear_relu_autocast<c10::DeviceType::CPU>); }

TORCH_LIBRARY_IMPL(fastlayers, AutocastCUDA, m) { m.impl("linear_relu", &linear_relu_autocast<c10::DeviceType::CUDA>); }

}  // namespace fastlayers
