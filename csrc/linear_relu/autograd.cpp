// Autograd for linear_relu, in C++: a fraction of a Python autograd.Function's
// fixed cost per call, and traceable by torch.compile and compiled autograd
// (is_traceable).
//
// Saved for backward: the output (it carries the ReLU mask), the weight only
// if the input needs a gradient, the input only if the weight does.
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "linear_relu.h"

namespace fastlayers {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class LinearReLUFunction : public torch::autograd::Function<LinearReLUFunction> {
 public:
  static constexpr bool is_traceable = true;

  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias) {
    at::AutoDispatchBelowADInplaceOrView guard;
    at::Tensor output = linear_relu_call(input, weight, bias);
    ctx->saved_data["has_bias"] = bias.has_value() && bias->defined();
    ctx->save_for_backward(
        {input.requires_grad() ? weight : at::Tensor(), weight.requires_grad() ? input : at::Tensor(), output});
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& weight = saved[0];
    const at::Tensor& input = saved[1];
    const at::Tensor& output = saved[2];
    const at::Tensor& grad = grads[0];
    const bool has_bias = ctx->saved_data["has_bias"].toBool();

    at::Tensor grad_input, grad_weight, grad_bias;
    if (ctx->needs_input_grad(0)) {
      grad_input = linear_relu_backward_input_call(grad, output, weight);
    }
    const bool need_weight = ctx->needs_input_grad(1);
    const bool need_bias = has_bias && ctx->needs_input_grad(2);
    if (need_weight || need_bias) {
      auto [gw, gb] = linear_relu_backward_params_call(
          grad, output, need_weight ? std::optional<at::Tensor>(input) : std::nullopt, need_bias);
      if (need_weight) grad_weight = gw;
      if (need_bias) grad_bias = gb;
    }
    return {grad_input, grad_weight, grad_bias};
  }
};

bool any_requires_grad(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  return input.requires_grad() || weight.requires_grad() ||
         (bias.has_value() && bias->defined() && bias->requires_grad());
}

at::Tensor linear_relu_autograd(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias) {
  // Inference: skip building a graph node (half the per-call cost at small
  // shapes).
  if (!at::GradMode::is_enabled() || !any_requires_grad(input, weight, bias)) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return linear_relu_call(input, weight, bias);
  }
  return LinearReLUFunction::apply(input, weight, bias);
}

at::Tensor backward_input_autograd(const at::Tensor& grad_output, const at::Tensor& output, const at::Tensor& weight) {
  check_no_double_backward(kLinearReLUBackwardInput, "fastlayers.linear_relu", {&grad_output, &output, &weight});
  at::AutoDispatchBelowADInplaceOrView guard;
  return linear_relu_backward_input_call(grad_output, output, weight);
}

std::tuple<at::Tensor, at::Tensor> backward_params_autograd(const at::Tensor& grad_output, const at::Tensor& output,
                                                            const std::optional<at::Tensor>& input, bool bias_grad) {
  const at::Tensor none;
  check_no_double_backward(kLinearReLUBackwardParams, "fastlayers.linear_relu",
                           {&grad_output, &output, input.has_value() ? &*input : &none});
  at::AutoDispatchBelowADInplaceOrView guard;
  return linear_relu_backward_params_call(grad_output, output, input, bias_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, Autograd, m) {
  m.impl("linear_relu", &linear_relu_autograd);
  m.impl("linear_relu_backward_input", &backward_input_autograd);
  m.impl("linear_relu_backward_params", &backward_params_autograd);
}

}  // namespace fastlayers
