// Autograd for center, in C++ like linear_relu's. Centering is linear and
// self-adjoint, so the gradient is the centered incoming gradient: backward
// calls the op itself (through autograd, so double backward works) and
// saves nothing.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "center.h"

namespace fastlayers {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class CenterFunction : public torch::autograd::Function<CenterFunction> {
 public:
  static constexpr bool is_traceable = true;

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, at::OptionalIntArrayRef dim) {
    at::AutoDispatchBelowADInplaceOrView guard;
    ctx->saved_data["has_dim"] = dim.has_value();
    if (dim.has_value()) ctx->saved_data["dim"] = dim->vec();
    return center_call(input, dim);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    if (!ctx->saved_data["has_dim"].toBool()) return {center_call(grads[0], std::nullopt), at::Tensor()};
    const std::vector<int64_t> dim = ctx->saved_data["dim"].toIntVector();
    return {center_call(grads[0], dim), at::Tensor()};
  }
};

at::Tensor center_autograd(const at::Tensor& input, at::OptionalIntArrayRef dim) {
  if (!at::GradMode::is_enabled() || !input.requires_grad()) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return center_call(input, dim);
  }
  return CenterFunction::apply(input, dim);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, Autograd, m) { m.impl("center", &center_autograd); }

}  // namespace fastlayers
