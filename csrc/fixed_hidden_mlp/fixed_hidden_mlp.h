// Argument rules of the fixed_hidden_mlp ops (the chapter's FixedHiddenMLP),
// shared by the CPU and CUDA kernels.
//
//   h1 = input @ weight.T + bias            input [..., F], weight [F, F], bias [F]
//   h2 = relu(h1 @ rand_weight + 1)         rand_weight [F, F]: a constant
//   h3 = h2 @ weight.T + bias               the same linear again
//   k  = smallest k >= 0 with sum|h3| / 2^k <= 1   (the chapter's halving loop)
//   out = sum(h3) / 2^k  (return_sum)  or  h3 / 2^k
//
// fixed_hidden_mlp(...) -> (out, hidden = h2, halvings = k as an int64 0-d
// tensor); hidden and halvings are what the backward needs. k is found on
// the device and applied as an exact power of two: no host synchronisation.
// Non-finite h3: the chapter's loop stops at once on a NaN sum and never
// stops on an infinite one; here both give k = 0, so the result carries the
// NaN or the infinity unchanged.
//
// fixed_hidden_mlp_backward(grad_output, input, weight, rand_weight, hidden,
//     halvings, return_sum, input_grad=True) -> (grad_input, grad_weight,
// grad_bias), with k held constant and the gradients of both uses of the
// shared linear summed. With input_grad=False grad_input is an empty [0]
// tensor, and the CPU kernels skip its product.
#pragma once

#include <ATen/core/Tensor.h>

#include <cmath>
#include <tuple>

#include "../common/checks.h"

namespace fastlayers {

constexpr const char* kFixedHiddenMLP = "fastlayers::fixed_hidden_mlp";
constexpr const char* kFixedHiddenMLPBackward = "fastlayers::fixed_hidden_mlp_backward";

inline void check_fixed_hidden_params(const char* op, const at::Tensor& input, const at::Tensor& weight,
                                      const at::Tensor& rand_weight) {
  check_floating(op, "input", input);
  check_floating(op, "weight", weight);
  check_floating(op, "rand_weight", rand_weight);
  check_same_dtype_device(op, "weight", weight, "input", input);
  check_same_dtype_device(op, "rand_weight", rand_weight, "input", input);
  TORCH_CHECK(weight.dim() == 2 && weight.size(0) == weight.size(1), op,
              ": argument 'weight' must be a square [features, features] matrix (the linear layer is applied "
              "twice), got shape ",
              weight.sizes());
  const int64_t f = weight.size(0);
  TORCH_CHECK(input.dim() >= 1 && input.size(-1) == f, op, ": input's last dimension must equal features = ", f,
              ", got input shape ", input.sizes());
  TORCH_CHECK(rand_weight.dim() == 2 && rand_weight.size(0) == f && rand_weight.size(1) == f, op,
              ": argument 'rand_weight' must have shape [", f, ", ", f, "], got ", rand_weight.sizes());
}

inline void check_fixed_hidden_mlp_args(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                                        const at::Tensor& rand_weight) {
  check_fixed_hidden_params(kFixedHiddenMLP, input, weight, rand_weight);
  check_floating(kFixedHiddenMLP, "bias", bias);
  check_same_dtype_device(kFixedHiddenMLP, "bias", bias, "input", input);
  TORCH_CHECK(bias.dim() == 1 && bias.size(0) == weight.size(0), kFixedHiddenMLP, ": argument 'bias' must have shape [",
              weight.size(0), "], got ", bias.sizes());
}

// Checks the backward's arguments; returns the rows of the input matrix.
inline int64_t check_fixed_hidden_mlp_backward_args(const at::Tensor& grad_output, const at::Tensor& input,
                                                    const at::Tensor& weight, const at::Tensor& rand_weight,
                                                    const at::Tensor& hidden, const at::Tensor& halvings,
                                                    bool return_sum) {
  const char* op = kFixedHiddenMLPBackward;
  check_fixed_hidden_params(op, input, weight, rand_weight);
  check_floating(op, "grad_output", grad_output);
  check_same_dtype_device(op, "grad_output", grad_output, "input", input);
  TORCH_CHECK(return_sum ? grad_output.numel() == 1 : grad_output.sizes() == input.sizes(), op,
              ": grad_output has shape ", grad_output.sizes(), ", expected ",
              return_sum ? "a single element" : "the input's shape");
  const int64_t f = weight.size(0);
  int64_t rows = 1;
  for (int64_t d = 0; d + 1 < input.dim(); ++d) rows *= input.size(d);
  check_defined(op, "hidden", hidden);
  check_same_dtype_device(op, "hidden", hidden, "input", input);
  TORCH_CHECK(hidden.dim() == 2 && hidden.size(0) == rows && hidden.size(1) == f, op, ": hidden has shape ",
              hidden.sizes(), ", expected [", rows, ", ", f, "]");
  check_defined(op, "halvings", halvings);
  TORCH_CHECK(halvings.numel() == 1 && halvings.scalar_type() == at::kLong && halvings.device() == input.device(), op,
              ": argument 'halvings' must be a single int64 element on the input's device (", input.device(), "), got ",
              halvings.scalar_type(), " of shape ", halvings.sizes(), " on ", halvings.device());
  return rows;
}

// The number of halvings for a sum of absolute values `s` (computed in
// double): the smallest k >= 0 with s / 2^k <= 1; 0 for NaN or infinity.
#if defined(__CUDACC__)
__host__ __device__
#endif
    inline int64_t halvings_for(double s) {
  if (!(s > 1.0) || s == INFINITY) return 0;  // s <= 1, NaN or +inf
  int e = 0;
  const double m = std::frexp(s, &e);  // s = m * 2^e, m in [0.5, 1)
  return m == 0.5 ? e - 1 : e;
}

// (output, hidden, halvings) and (grad_input, grad_weight, grad_bias).
using FixedHiddenTriple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

// Calls of the ops through the dispatcher (schema.cpp), for the kernels that
// sit above the backends (autograd, autocast) and redispatch.
FixedHiddenTriple fixed_hidden_mlp_call(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                                        const at::Tensor& rand_weight, bool return_sum);
FixedHiddenTriple fixed_hidden_mlp_backward_call(const at::Tensor& grad_output, const at::Tensor& input,
                                                 const at::Tensor& weight, const at::Tensor& rand_weight,
                                                 const at::Tensor& hidden, const at::Tensor& halvings, bool return_sum,
                                                 bool input_grad);

}  // namespace fastlayers
