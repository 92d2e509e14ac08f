// CPU kernels of the linear_relu ops: each is one call of the packed GEMM in
// common/cpu_gemm.h, with the ReLU mask and bias folded into its packing and
// store. Inputs are read through their strides: no .contiguous() copies.
// Where the auto policy (common/gemm_policy.h) measured the vendor faster on
// this CPU's instruction set, the products go there instead
// (common/cpu_vendor.h: oneDNN's fused forward; ATen's threshold_backward,
// mm and sum backward).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/threshold_backward.h>

#include "../common/cpu_gemm.h"
#include "../common/cpu_vendor.h"
#include "../common/gemm_policy.h"
#include "linear_relu.h"

namespace fastlayers {
namespace {

at::Tensor linear_relu_cpu(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_linear_relu_args(input, weight, bias);
  const bool has_bias = bias.has_value() && bias->defined();
  const auto out_shape = with_last_dim(input, weight.size(0));
  const at::Tensor x = as_matrix(input);
  if (x.size(0) > 0 && weight.size(0) > 0 &&
      use_vendor_cpu_gemm(GemmPass::Forward, input.scalar_type(), x.size(0), weight.size(0), weight.size(1))) {
    return cpu::vendor_linear_relu(x, weight, bias).view(out_shape);  // a fresh contiguous [M, N]
  }
  at::Tensor out = at::empty(out_shape, input.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "linear_relu_cpu", [&] {
    using Acc = at::opmath_type<scalar_t>;
    std::vector<Acc> copy;
    const Acc* b = has_bias ? cpu::bias_in_acc<scalar_t, Acc>(*bias, copy) : nullptr;
    // out[M,N] = x[M,K] @ weight.T[K,N]
    cpu::gemm<scalar_t, Acc>(cpu::view_of<scalar_t>(x), nullptr, cpu::view_of<scalar_t>(weight).transposed(),
                             out.data_ptr<scalar_t>(), out.size(-1), {b, /*relu=*/true}, nullptr);
  });
  return out;
}

at::Tensor linear_relu_backward_input_cpu(const at::Tensor& grad_output, const at::Tensor& output,
                                          const at::Tensor& weight) {
  check_linear_relu_backward_input_args(grad_output, output, weight);
  at::Tensor grad_input = at::empty(with_last_dim(output, weight.size(1)), output.options());
  if (grad_input.numel() == 0) return grad_input;
  const at::Tensor g = as_matrix(grad_output);
  const at::Tensor o = as_matrix(output);
  if (use_vendor_cpu_gemm(GemmPass::Backward, output.scalar_type(), g.size(0), weight.size(1), weight.size(0))) {
    at::Tensor grad_input2 = grad_input.view({g.size(0), weight.size(1)});
    at::mm_out(grad_input2, at::threshold_backward(g, o, 0), weight);
    return grad_input;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, output.scalar_type(), "linear_relu_backward_input_cpu", [&] {
        using Acc = at::opmath_type<scalar_t>;
        // grad_input[M,K] = (g * (o > 0))[M,N] @ weight[N,K]
        const auto mask = cpu::view_of<scalar_t>(o);
        cpu::gemm<scalar_t, Acc>(cpu::view_of<scalar_t>(g), &mask, cpu::view_of<scalar_t>(weight),
                                 grad_input.data_ptr<scalar_t>(), grad_input.size(-1), {}, nullptr);
      });
  return grad_input;
}

std::tuple<at::Tensor, at::Tensor> linear_relu_backward_params_cpu(const at::Tensor& grad_output,
                                                                   const at::Tensor& output,
                                                                   const std::optional<at::Tensor>& input,
                                                                   bool bias_grad) {
  check_linear_relu_backward_params_args(grad_output, output, input);
  const bool weight_grad = input.has_value() && input->defined();
  const int64_t N = output.size(-1);
  const auto opts = output.options();
  at::Tensor grad_weight = weight_grad ? at::empty({N, input->size(-1)}, opts) : at::empty({0}, opts);
  at::Tensor grad_bias = bias_grad ? at::empty({N}, opts) : at::empty({0}, opts);
  if (!weight_grad && !bias_grad) return {grad_weight, grad_bias};

  const at::Tensor g = as_matrix(grad_output);
  const at::Tensor o = as_matrix(output);
  if (weight_grad && use_vendor_cpu_gemm(GemmPass::Backward, output.scalar_type(), N, input->size(-1), g.size(0))) {
    const at::Tensor masked = at::threshold_backward(g, o, 0);
    at::mm_out(grad_weight, masked.t(), as_matrix(*input));
    if (bias_grad) at::sum_out(grad_bias, masked, 0);
    return {grad_weight, grad_bias};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, output.scalar_type(), "linear_relu_backward_params_cpu", [&] {
        using Acc = at::opmath_type<scalar_t>;
        // Rows of the masked gradient's transpose, one per output feature:
        // their sums are the bias gradient.
        const auto gt = cpu::view_of<scalar_t>(g).transposed();
        const auto mask_t = cpu::view_of<scalar_t>(o).transposed();
        std::vector<Acc> sums(bias_grad ? static_cast<size_t>(N) : 0);
        if (weight_grad) {
          // grad_weight[N,K] = (g * (o > 0)).T[N,M] @ input[M,K]
          const at::Tensor x = as_matrix(*input);
          cpu::gemm<scalar_t, Acc>(gt, &mask_t, cpu::view_of<scalar_t>(x), grad_weight.data_ptr<scalar_t>(),
                                   grad_weight.size(1), {}, bias_grad ? sums.data() : nullptr);
        } else {
          cpu::masked_row_sums<scalar_t, Acc>(gt, &mask_t, sums.data());
        }
        if (bias_grad) {
          scalar_t* gb = grad_bias.data_ptr<scalar_t>();
          for (int64_t n = 0; n < N; ++n) gb[n] = static_cast<scalar_t>(sums[n]);
        }
      });
  return {grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CPU, m) {
  m.impl("linear_relu", &linear_relu_cpu);
  m.impl("linear_relu_backward_input", &linear_relu_backward_input_cpu);
  m.impl("linear_relu_backward_params", &linear_relu_backward_params_cpu);
}

}  // namespace fastlayers
