// CUDA kernels of the linear_relu ops: each is one launch of the product in
// common/cuda_gemm.h (plus a column-sum kernel when only the bias needs a
// gradient), on the current stream under a device guard. Large products may
// go to the vendor's GEMM instead (common/gemm_policy.h): cuBLASLt's bias
// epilogue and ATen's relu_ forward, ATen's ReLU mask then cuBLAS backward.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/threshold_backward.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/cuda_gemm.h"
#include "../common/gemm_policy.h"
#include "linear_relu.h"

namespace fastlayers {
namespace {

using cuda::strided;
using cuda::strided_t;

// The vendor route's backward: grad where output > 0, else 0 (ATen's
// vectorised threshold_backward, the kernel eager's ReLU backward runs).
at::Tensor relu_masked(const at::Tensor& grad, const at::Tensor& output) {
  return at::threshold_backward(grad, output, 0);
}

// For the auto policy (common/gemm_policy.h): whether a half-precision
// product's operands suit the vector kernels (false for other dtypes, where
// the answer does not matter), and whether the mask is laid out as the
// gradient it masks, as those kernels read it.
bool in_vector_layouts(c10::ScalarType dtype, std::initializer_list<at::Tensor> operands, bool along_last_dim) {
  return (dtype == at::kHalf || dtype == at::kBFloat16) && cuda::half_vector_operands(operands, along_last_dim);
}
bool mask_like(const at::Tensor& mask, const at::Tensor& grad) { return mask.strides() == grad.strides(); }

at::Tensor linear_relu_cuda(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  check_linear_relu_args(input, weight, bias);
  const c10::cuda::CUDAGuard guard(input.device());
  const bool has_bias = bias.has_value() && bias->defined();
  at::Tensor out = at::empty(with_last_dim(input, weight.size(0)), input.options());
  if (out.numel() == 0) return out;
  const at::Tensor x = as_matrix(input);
  if (use_vendor_gemm(GemmPass::Forward, input.scalar_type(), x.size(0), weight.size(0), weight.size(1),
                      in_vector_layouts(input.scalar_type(), {x, weight}, true))) {
    at::Tensor out2 = out.view({x.size(0), weight.size(0)});
    // cuBLASLt's bias epilogue, then ATen's relu_: its fused RELU_BIAS epilogue (_addmm_activation)
    // turns NaN into 0, where torch.relu keeps it (measured on the H200), so a diverging model would
    // go on silently. The separate relu_ costs one pass over the output (benchmarks/NOTES.md).
    if (has_bias) {
      at::addmm_out(out2, *bias, x, weight.t()).relu_();
    } else {
      at::mm_out(out2, x, weight.t()).relu_();
    }
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "linear_relu_cuda", [&] {
    using Acc = at::opmath_type<scalar_t>;
    cuda::GemmArgs<scalar_t, Acc> g;
    g.a = strided<scalar_t>(x);         // x[M,K]
    g.b = strided_t<scalar_t>(weight);  // weight.T[K,N]
    g.c = out.data_ptr<scalar_t>();
    g.ldc = out.size(-1);
    g.M = x.size(0), g.N = weight.size(0), g.K = weight.size(1);
    if (has_bias) g.bias = bias->const_data_ptr<scalar_t>(), g.bias_stride = bias->stride(0);
    g.relu = true;
    cuda::gemm(g, out.options());
  });
  return out;
}

at::Tensor linear_relu_backward_input_cuda(const at::Tensor& grad_output, const at::Tensor& output,
                                           const at::Tensor& weight) {
  check_linear_relu_backward_input_args(grad_output, output, weight);
  const c10::cuda::CUDAGuard guard(output.device());
  at::Tensor grad_input = at::empty(with_last_dim(output, weight.size(1)), output.options());
  if (grad_input.numel() == 0) return grad_input;
  const at::Tensor g2 = as_matrix(grad_output), o2 = as_matrix(output);
  if (use_vendor_gemm(GemmPass::Backward, output.scalar_type(), g2.size(0), weight.size(1), weight.size(0),
                      mask_like(o2, g2) && in_vector_layouts(output.scalar_type(), {g2, o2, weight}, false))) {
    at::Tensor grad_input2 = grad_input.view({g2.size(0), weight.size(1)});
    at::mm_out(grad_input2, relu_masked(g2, o2), weight);
    return grad_input;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, output.scalar_type(), "linear_relu_backward_input_cuda",
                                  [&] {
                                    using Acc = at::opmath_type<scalar_t>;
                                    // grad_input[M,K] = (g * (o > 0))[M,N] @ weight[N,K]
                                    cuda::GemmArgs<scalar_t, Acc> g;
                                    g.a = strided<scalar_t>(g2);
                                    g.mask = strided<scalar_t>(o2);
                                    g.b = strided<scalar_t>(weight);
                                    g.c = grad_input.data_ptr<scalar_t>();
                                    g.ldc = grad_input.size(-1);
                                    g.M = g2.size(0), g.N = weight.size(1), g.K = weight.size(0);
                                    cuda::gemm(g, grad_input.options());
                                  });
  return grad_input;
}

// grad_bias[n] = sum_m g[m,n] * (o[m,n] > 0): one thread per column, rows in
// order (deterministic); consecutive threads read consecutive columns.
template <typename T, typename Acc>
__global__ void masked_column_sum_kernel(cuda::StridedMatrix<T> g, cuda::StridedMatrix<T> o, int64_t M, int64_t N,
                                         T* out) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (n >= N) return;
  Acc s = Acc(0);
  for (int64_t m = 0; m < M; ++m)
    if (cuda::relu_mask_on(o(m, n))) s += static_cast<Acc>(g(m, n));
  out[n] = static_cast<T>(s);
}

std::tuple<at::Tensor, at::Tensor> linear_relu_backward_params_cuda(const at::Tensor& grad_output,
                                                                    const at::Tensor& output,
                                                                    const std::optional<at::Tensor>& input,
                                                                    bool bias_grad) {
  check_linear_relu_backward_params_args(grad_output, output, input);
  const c10::cuda::CUDAGuard guard(output.device());
  const bool weight_grad = input.has_value() && input->defined();
  const int64_t N = output.size(-1);
  const auto opts = output.options();
  at::Tensor grad_weight = weight_grad ? at::empty({N, input->size(-1)}, opts) : at::empty({0}, opts);
  at::Tensor grad_bias = bias_grad ? at::empty({N}, opts) : at::empty({0}, opts);
  if (!weight_grad && !bias_grad) return {grad_weight, grad_bias};
  const at::Tensor g2 = as_matrix(grad_output), o2 = as_matrix(output);
  if (weight_grad && use_vendor_gemm(GemmPass::Backward, output.scalar_type(), N, input->size(-1), g2.size(0),
                                     mask_like(o2, g2) &&
                                         in_vector_layouts(output.scalar_type(), {g2, o2, as_matrix(*input)}, false))) {
    const at::Tensor masked = relu_masked(g2, o2);
    at::mm_out(grad_weight, masked.t(), as_matrix(*input));
    if (bias_grad) at::sum_out(grad_bias, masked, 0);
    return {grad_weight, grad_bias};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, output.scalar_type(), "linear_relu_backward_params_cuda", [&] {
        using Acc = at::opmath_type<scalar_t>;
        bool bias_done = false;
        if (weight_grad) {  // cuda::gemm also fills the row sums when K is 0
          // grad_weight[N,K] = (g * (o > 0)).T[N,M] @ input[M,K]; its row sums
          // are the bias gradient.
          const at::Tensor x = as_matrix(*input);
          cuda::GemmArgs<scalar_t, Acc> g;
          g.a = strided_t<scalar_t>(g2);
          g.mask = strided_t<scalar_t>(o2);
          g.b = strided<scalar_t>(x);
          g.c = grad_weight.data_ptr<scalar_t>();
          g.ldc = grad_weight.size(1);
          g.M = N, g.N = x.size(1), g.K = x.size(0);
          if (bias_grad) g.row_sums = grad_bias.data_ptr<scalar_t>();
          cuda::gemm(g, opts);
          bias_done = bias_grad;
        }
        if (bias_grad && !bias_done && N > 0) {
          const int threads = 256;
          masked_column_sum_kernel<scalar_t, Acc>
              <<<static_cast<unsigned>((N + threads - 1) / threads), threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
                  strided<scalar_t>(g2), strided<scalar_t>(o2), g2.size(0), N, grad_bias.data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      });
  return {grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CUDA, m) {
  m.impl("linear_relu", &linear_relu_cuda);
  m.impl("linear_relu_backward_input", &linear_relu_backward_input_cuda);
  m.impl("linear_relu_backward_params", &linear_relu_backward_params_cuda);
}

}  // namespace fastlayers
