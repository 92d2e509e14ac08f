// Calls of the linear_relu ops through the dispatcher, for the kernels that
// sit above the backends (autograd, autocast) and must redispatch.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <optional>
#include <tuple>

namespace fastlayers {

inline at::Tensor linear_relu_call(const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fastlayers::linear_relu", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                            const std::optional<at::Tensor>&)>();
  return op.call(input, weight, bias);
}

inline at::Tensor linear_relu_backward_input_call(const at::Tensor& grad_output,
                               const at::Tensor& output,
                               const at::Tensor& weight) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fastlayers::linear_relu_backward_input", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&,
                            const at::Tensor&)>();
  return op.call(grad_output, output, weight);
}

inline std::tuple<at::Tensor, at::Tensor> linear_relu_backward_params_call(
    const at::Tensor& grad_output, const at::Tensor& output,
    const std::optional<at::Tensor>& input, bool bias_grad) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fastlayers::linear_relu_backward_params", "")
          .typed<std::tuple<at::Tensor, at::Tensor>(
              const at::Tensor&, const at::Tensor&,
              const std::optional<at::Tensor>&, bool)>();
  return op.call(grad_output, output, input, bias_grad);
}

}  // namespace fastlayers
