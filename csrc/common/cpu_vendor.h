// The CPU vendor route (common/gemm_policy.h): oneDNN's fused linear+ReLU
// where the installed torch has it, public ATen calls (MKL / oneDNN inside)
// where it does not.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

namespace fastlayers {
namespace cpu {

// relu(x @ weight.T + bias) for a 2-D x, into a new [M, N] tensor.
at::Tensor vendor_linear_relu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias);

// Whether mkldnn::_linear_pointwise serves `dtype` in this process (probed
// once per dtype with tiny calls; torch builds without oneDNN, older ones
// with another schema, or a oneDNN that turns an infinity into NaN, fall
// back to at::addmm + relu).
bool has_onednn_linear_pointwise(c10::ScalarType dtype);

}  // namespace cpu
}  // namespace fastlayers
