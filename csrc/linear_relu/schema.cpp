// The linear_relu ops' schemas, and their typed calls through the
// dispatcher (declared in linear_relu.h).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "linear_relu.h"

namespace fastlayers {

// relu(input @ weight.T + bias), and its two backward products; see
// linear_relu.h for the shapes.
TORCH_LIBRARY_FRAGMENT(fastlayers, m) {
  m.def("linear_relu(Tensor input, Tensor weight, Tensor? bias) -> Tensor");
  m.def("linear_relu_backward_input(Tensor grad_output, Tensor output, Tensor weight) -> Tensor");
  m.def(
      "linear_relu_backward_params(Tensor grad_output, Tensor output, Tensor? input, bool bias_grad) "
      "-> (Tensor, Tensor)");
}

at::Tensor linear_relu_call(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow(kLinearReLU, "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&)>();
  return op.call(input, weight, bias);
}

at::Tensor linear_relu_backward_input_call(const at::Tensor& grad_output, const at::Tensor& output,
                                           const at::Tensor& weight) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow(kLinearReLUBackwardInput, "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>();
  return op.call(grad_output, output, weight);
}

std::tuple<at::Tensor, at::Tensor> linear_relu_backward_params_call(const at::Tensor& grad_output,
                                                                    const at::Tensor& output,
                                                                    const std::optional<at::Tensor>& input,
                                                                    bool bias_grad) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow(kLinearReLUBackwardParams, "")
                             .typed<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                       const std::optional<at::Tensor>&, bool)>();
  return op.call(grad_output, output, input, bias_grad);
}

}  // namespace fastlayers
