// Calls of the fixed_hidden_mlp ops through the dispatcher, for the kernels
// that sit above the backends (autograd, autocast) and must redispatch.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <tuple>

namespace fastlayers {

using FixedHiddenTriple = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

inline FixedHiddenTriple fixed_hidden_mlp_call(const at::Tensor& input, const at::Tensor& weight,
                                               const at::Tensor& bias, const at::Tensor& rand_weight,
                                               bool return_sum) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("fastlayers::fixed_hidden_mlp", "")
                             .typed<FixedHiddenTriple(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                      const at::Tensor&, bool)>();
  return op.call(input, weight, bias, rand_weight, return_sum);
}

inline FixedHiddenTriple fixed_hidden_mlp_backward_call(const at::Tensor& grad_output, const at::Tensor& input,
                                                        const at::Tensor& weight, const at::Tensor& rand_weight,
                                                        const at::Tensor& hidden, const at::Tensor& halvings,
                                                        bool return_sum) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fastlayers::fixed_hidden_mlp_backward", "")
          .typed<FixedHiddenTriple(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const at::Tensor&, const at::Tensor&, bool)>();
  return op.call(grad_output, input, weight, rand_weight, hidden, halvings, return_sum);
}

}  // namespace fastlayers
