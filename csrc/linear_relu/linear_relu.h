// Shape and argument rules of the linear_relu ops, shared by the CPU and
// CUDA kernels so both reject the same inputs with the same words.
//
//   linear_relu(input[..., K], weight[N, K], bias[N]?) -> relu(input @ weight.T + bias)[..., N]
//   linear_relu_backward_input(grad_output[..., N], output[..., N], weight[N, K]) -> grad_input[..., K]
//   linear_relu_backward_params(grad_output[..., N], output[..., N], input[..., K]?, bool bias_grad)
//       -> (grad_weight[N, K], grad_bias[N]); grad_weight is computed when
//          `input` is given and grad_bias when `bias_grad` is set; a result
//          not asked for comes back as an empty tensor of shape [0].
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

#include "../common/checks.h"
#include "../common/shapes.h"

namespace fastlayers {

constexpr const char* kLinearReLU = "fastlayers::linear_relu";
constexpr const char* kLinearReLUBackwardInput = "fastlayers::linear_relu_backward_input";
constexpr const char* kLinearReLUBackwardParams = "fastlayers::linear_relu_backward_params";

inline void check_linear_relu_args(const at::Tensor& input, const at::Tensor& weight,
                                   const std::optional<at::Tensor>& bias) {
  const char* op = kLinearReLU;
  check_floating(op, "input", input);
  check_floating(op, "weight", weight);
  check_same_dtype_device(op, "weight", weight, "input", input);
  check_dim(op, "weight", weight, 2);
  TORCH_CHECK(input.dim() >= 1, op,
              ": argument 'input' must have at least 1 dimension (..., "
              "in_features), got a 0-D tensor");
  TORCH_CHECK(input.size(-1) == weight.size(1), op, ": input's last dimension (", input.size(-1),
              ") must equal in_features = weight.size(1) (", weight.size(1), "); got input shape ", input.sizes(),
              " and weight shape ", weight.sizes());
  if (bias.has_value() && bias->defined()) {
    check_floating(op, "bias", *bias);
    check_same_dtype_device(op, "bias", *bias, "input", input);
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), op,
                ": argument 'bias' must have shape [out_features] = [", weight.size(0), "], got ", bias->sizes());
  }
}

// grad_output and output must agree, and have N = out_features columns.
inline void check_grad_output(const char* op, const at::Tensor& grad_output, const at::Tensor& output) {
  check_floating(op, "grad_output", grad_output);
  check_floating(op, "output", output);
  check_same_dtype_device(op, "output", output, "grad_output", grad_output);
  TORCH_CHECK(grad_output.dim() >= 1 && grad_output.sizes() == output.sizes(), op, ": grad_output shape ",
              grad_output.sizes(), " must equal output shape ", output.sizes());
}

inline void check_linear_relu_backward_input_args(const at::Tensor& grad_output, const at::Tensor& output,
                                                  const at::Tensor& weight) {
  const char* op = kLinearReLUBackwardInput;
  check_grad_output(op, grad_output, output);
  check_floating(op, "weight", weight);
  check_same_dtype_device(op, "weight", weight, "grad_output", grad_output);
  check_dim(op, "weight", weight, 2);
  TORCH_CHECK(output.size(-1) == weight.size(0), op, ": output's last dimension (", output.size(-1),
              ") must equal out_features = weight.size(0) (", weight.size(0), ")");
}

inline void check_linear_relu_backward_params_args(const at::Tensor& grad_output, const at::Tensor& output,
                                                   const std::optional<at::Tensor>& input) {
  const char* op = kLinearReLUBackwardParams;
  check_grad_output(op, grad_output, output);
  if (input.has_value() && input->defined()) {
    check_floating(op, "input", *input);
    check_same_dtype_device(op, "input", *input, "grad_output", grad_output);
    TORCH_CHECK(input->dim() == output.dim() &&
                    input->sizes().slice(0, input->dim() - 1) == output.sizes().slice(0, output.dim() - 1),
                op, ": input shape ", input->sizes(), " must match output shape ", output.sizes(),
                " in every dimension but the last");
  }
}

// Calls of the ops through the dispatcher (schema.cpp), for the kernels
// that sit above the backends (autograd, autocast) and redispatch.
at::Tensor linear_relu_call(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias);
at::Tensor linear_relu_backward_input_call(const at::Tensor& grad_output, const at::Tensor& output,
                                           const at::Tensor& weight);
std::tuple<at::Tensor, at::Tensor> linear_relu_backward_params_call(const at::Tensor& grad_output,
                                                                    const at::Tensor& output,
                                                                    const std::optional<at::Tensor>& input,
                                                                    bool bias_grad);

}  // namespace fastlayers
