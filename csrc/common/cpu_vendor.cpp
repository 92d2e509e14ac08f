// See cpu_vendor.h.
#include "cpu_vendor.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <limits>
#include <mutex>

namespace fastlayers {
namespace cpu {
namespace {

// Called boxed: the schema's string types differ between torch versions
// (c10::string_view before 2.7), the boxed stack does not.
at::Tensor call_linear_pointwise(const c10::OperatorHandle& op, const at::Tensor& x, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, const char* post_op) {
  torch::jit::Stack stack;
  stack.emplace_back(x);
  stack.emplace_back(weight);
  stack.emplace_back(bias.has_value() && bias->defined() ? c10::IValue(*bias) : c10::IValue());
  stack.emplace_back(std::string(post_op));
  stack.emplace_back(c10::List<std::optional<at::Scalar>>());
  stack.emplace_back(std::string(""));
  op.callBoxed(&stack);
  return stack.back().toTensor();
}

const std::optional<c10::OperatorHandle>& linear_pointwise_op() {
  static const std::optional<c10::OperatorHandle> op =
      c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
  return op;
}

}  // namespace

bool has_onednn_linear_pointwise(c10::ScalarType dtype) {
  if (dtype != at::kFloat && dtype != at::kBFloat16) return false;
  static std::once_flag once[2];
  static bool works[2] = {false, false};
  const int i = dtype == at::kFloat ? 0 : 1;
  std::call_once(once[i], [&] {
    const auto& op = linear_pointwise_op();
    if (!op.has_value()) return;
    try {
      const auto opts = at::TensorOptions().dtype(dtype);
      const at::Tensor x = at::ones({2, 3}, opts), w = at::ones({4, 3}, opts), b = at::full({4}, -4.0, opts);
      const at::Tensor y = call_linear_pointwise(*op, x, w, b, "relu");
      // 3 - 4 = -1 -> relu -> 0: the call ran, and the epilogue was the ReLU.
      works[i] = y.sizes() == at::IntArrayRef({2, 4}) && y.eq(0).all().item<bool>();
      // An infinity in the last of an odd number of k's must give infinities:
      // on a CPU without AVX512-BF16 (Intel Xeon @ 2.80GHz, torch 2.14.1)
      // oneDNN's bfloat16 product gave NaN there (inf times its k padding),
      // where addmm, eager's product, gives inf.
      const at::Tensor x_inf = x.clone();
      x_inf.select(0, 0).select(0, 2).fill_(std::numeric_limits<double>::infinity());
      const at::Tensor y_inf = call_linear_pointwise(*op, x_inf, w, b, "none");
      works[i] = works[i] && y_inf.select(0, 0).isposinf().all().item<bool>();
    } catch (const std::exception&) {
      works[i] = false;
    }
  });
  return works[i];
}

// Whether every element is finite, from the exponent bits (an OR over
// integers: vectorises, and stops at nothing).
template <typename Bits>
bool all_finite_bits(const Bits* p, int64_t n, Bits exponent) {
  Bits seen = 0;
  for (int64_t i = 0; i < n; ++i) seen |= static_cast<Bits>(((p[i] & exponent) == exponent) ? 1 : 0);
  return seen == 0;
}

bool all_finite(const at::Tensor& t) {
  const at::Tensor c = t.contiguous();
  const int64_t n = c.numel();
  if (c.scalar_type() == at::kFloat)
    return all_finite_bits(static_cast<const uint32_t*>(c.const_data_ptr()), n, uint32_t(0x7f800000));
  return all_finite_bits(static_cast<const uint16_t*>(c.const_data_ptr()), n, uint16_t(0x7f80));
}

at::Tensor vendor_linear_relu(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_onednn_linear_pointwise(x.scalar_type())) {
    // oneDNN's fused ReLU maps NaN to 0, torch.relu keeps it. Two NaN-safe
    // ways, and the one that reads less is taken: the product without the
    // post-op and then ReLU in place (M*N elements: small outputs), or a
    // scan of the operands for non-finite values (M*K + N*K) and the fused
    // post-op when there is none.
    const int64_t m = x.size(0), k = x.size(1), n = weight.size(0);
    // Made contiguous once, for the scan and the call alike.
    const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
    std::optional<at::Tensor> b;
    if (has_bias) b = bias->contiguous();
    if (m * n <= m * k + n * k) {
      return call_linear_pointwise(*linear_pointwise_op(), xc, wc, b, "none").relu_();
    }
    if (all_finite(xc) && all_finite(wc) && (!has_bias || all_finite(*b))) {
      return call_linear_pointwise(*linear_pointwise_op(), xc, wc, b, "relu");
    }
  }
  at::Tensor y = has_bias ? at::addmm(*bias, x, weight.t()) : at::mm(x, weight.t());
  return y.relu_();
}

}  // namespace cpu
}  // namespace fastlayers
