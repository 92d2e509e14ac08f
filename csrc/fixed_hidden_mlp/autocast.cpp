// Autocast (AMP) for fixed_hidden_mlp: what the chapter's block does under
// autocast. Its three matrix products (linear, mm, linear) run in the
// autocast dtype, so every operand is cast to it on the way in (rand_weight
// too, as torch.mm casts it), and the block's elementwise steps follow in
// that dtype. CUDA autocast runs `sum` in float32, so there the summed
// output comes back as float32; CPU autocast keeps it in the autocast dtype.
// The casts happen above autograd, so gradients flow back to float32
// weights.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "fixed_hidden_mlp.h"

namespace fastlayers {
namespace {

template <c10::DeviceType device>
FixedHiddenTriple fixed_hidden_mlp_autocast(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                                            const at::Tensor& rand_weight, bool return_sum) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(device));
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device);
  auto [out, hidden, halvings] = fixed_hidden_mlp_call(
      at::autocast::cached_cast(dtype, input, device), at::autocast::cached_cast(dtype, weight, device),
      at::autocast::cached_cast(dtype, bias, device), at::autocast::cached_cast(dtype, rand_weight, device),
      return_sum);
  if (device == c10::DeviceType::CUDA && return_sum && out.is_floating_point()) {
    out = out.to(at::kFloat);
  }
  return {out, hidden, halvings};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, AutocastCPU, m) {
  m.impl("fixed_hidden_mlp", &fixed_hidden_mlp_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(fastlayers, AutocastCUDA, m) {
  m.impl("fixed_hidden_mlp", &fixed_hidden_mlp_autocast<c10::DeviceType::CUDA>);
}

}  // namespace fastlayers
