// The fixed_hidden_mlp ops' schemas, and their typed calls through the
// dispatcher (declared in fixed_hidden_mlp.h).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "fixed_hidden_mlp.h"

namespace fastlayers {

// The chapter's FixedHiddenMLP; the forward returns (output, hidden,
// halvings), the last two for the backward. See fixed_hidden_mlp.h.
TORCH_LIBRARY_FRAGMENT(fastlayers, m) {
  m.def(
      "fixed_hidden_mlp(Tensor input, Tensor weight, Tensor bias, Tensor rand_weight, bool return_sum=True) "
      "-> (Tensor, Tensor, Tensor)");
  m.def(
      "fixed_hidden_mlp_backward(Tensor grad_output, Tensor input, Tensor weight, Tensor rand_weight, "
      "Tensor hidden, Tensor halvings, bool return_sum, bool input_grad=True) -> (Tensor, Tensor, Tensor)");
}

FixedHiddenTriple fixed_hidden_mlp_call(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                                        const at::Tensor& rand_weight, bool return_sum) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow(kFixedHiddenMLP, "")
          .typed<FixedHiddenTriple(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, bool)>();
  return op.call(input, weight, bias, rand_weight, return_sum);
}

FixedHiddenTriple fixed_hidden_mlp_backward_call(const at::Tensor& grad_output, const at::Tensor& input,
                                                 const at::Tensor& weight, const at::Tensor& rand_weight,
                                                 const at::Tensor& hidden, const at::Tensor& halvings, bool return_sum,
                                                 bool input_grad) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow(kFixedHiddenMLPBackward, "")
          .typed<FixedHiddenTriple(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                   const at::Tensor&, const at::Tensor&, bool, bool)>();
  return op.call(grad_output, input, weight, rand_weight, hidden, halvings, return_sum, input_grad);
}

}  // namespace fastlayers
