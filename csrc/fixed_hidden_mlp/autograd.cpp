// Autograd for fixed_hidden_mlp, in C++ like the other ops. The halving
// count k is held constant, as the chapter's loop does; rand_weight gets no
// gradient. Saved: input, weight, rand_weight and the op's own hidden and
// halvings outputs (no extra memory).
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include "fixed_hidden_mlp.h"

namespace fastlayers {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
class FixedHiddenMLPFunction : public torch::autograd::Function<FixedHiddenMLPFunction> {
 public:
  static constexpr bool is_traceable = true;

  static variable_list forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                               const at::Tensor& bias, const at::Tensor& rand_weight, bool return_sum) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [out, hidden, halvings] = fixed_hidden_mlp_call(input, weight, bias, rand_weight, return_sum);
    ctx->mark_non_differentiable({hidden, halvings});
    ctx->save_for_backward({input, weight, rand_weight, hidden, halvings});
    ctx->saved_data["return_sum"] = return_sum;
    return {out, hidden, halvings};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto s = ctx->get_saved_variables();
    auto [grad_input, grad_weight, grad_bias] = fixed_hidden_mlp_backward_call(
        grads[0], s[0], s[1], s[2], s[3], s[4], ctx->saved_data["return_sum"].toBool(), ctx->needs_input_grad(0));
    return {ctx->needs_input_grad(0) ? grad_input : at::Tensor(), grad_weight, grad_bias, at::Tensor(), at::Tensor()};
  }
};

FixedHiddenTriple fixed_hidden_mlp_autograd(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& bias,
                                            const at::Tensor& rand_weight, bool return_sum) {
  const bool needs_grad = input.requires_grad() || weight.requires_grad() || bias.requires_grad();
  if (!at::GradMode::is_enabled() || !needs_grad) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return fixed_hidden_mlp_call(input, weight, bias, rand_weight, return_sum);
  }
  const variable_list out = FixedHiddenMLPFunction::apply(input, weight, bias, rand_weight, return_sum);
  return {out[0], out[1], out[2]};
}

FixedHiddenTriple fixed_hidden_mlp_backward_autograd(const at::Tensor& grad_output, const at::Tensor& input,
                                                     const at::Tensor& weight, const at::Tensor& rand_weight,
                                                     const at::Tensor& hidden, const at::Tensor& halvings,
                                                     bool return_sum, bool input_grad) {
  check_no_double_backward(kFixedHiddenMLPBackward, "fastlayers.FixedHiddenMLP",
                           {&grad_output, &input, &weight, &rand_weight, &hidden});
  at::AutoDispatchBelowADInplaceOrView guard;
  return fixed_hidden_mlp_backward_call(grad_output, input, weight, rand_weight, hidden, halvings, return_sum,
                                        input_grad);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, Autograd, m) {
  m.impl("fixed_hidden_mlp", &fixed_hidden_mlp_autograd);
  m.impl("fixed_hidden_mlp_backward", &fixed_hidden_mlp_backward_autograd);
}

}  // namespace fastlayers
