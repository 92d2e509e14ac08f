// Argument checks shared by every op and backend. Each message names the op
// and the argument, and says what was seen, so a user can act on it.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <optional>

namespace fastlayers {

inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// `t` must be a tensor (Python's None arrives as an undefined tensor).
inline void check_defined(const char* op, const char* arg, const at::Tensor& t) {
  TORCH_CHECK(t.defined(), op, ": argument '", arg, "' must be a tensor, got an undefined tensor");
}

// `t` must be float16/bfloat16/float32/float64.
inline void check_floating(const char* op, const char* arg, const at::Tensor& t) {
  check_defined(op, arg, t);
  TORCH_CHECK(is_supported_float(t.scalar_type()), op, ": argument '", arg,
              "' must be a floating-point tensor (float16, bfloat16, float32 "
              "or float64), got ",
              t.scalar_type());
}

// `t` must share dtype and device with `ref` (named `ref_arg`).
inline void check_same_dtype_device(const char* op, const char* arg, const at::Tensor& t, const char* ref_arg,
                                    const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": argument '", arg, "' has dtype ", t.scalar_type(), " but '",
              ref_arg, "' has dtype ", ref.scalar_type(), "; all tensors must have the same dtype");
  TORCH_CHECK(t.device() == ref.device(), op, ": argument '", arg, "' is on ", t.device(), " but '", ref_arg,
              "' is on ", ref.device(), "; all tensors must be on the same device");
}

inline void check_dim(const char* op, const char* arg, const at::Tensor& t, int64_t dim) {
  TORCH_CHECK(t.dim() == dim, op, ": argument '", arg, "' must be ", dim, "-D, got shape ", t.sizes());
}

// Backward ops have no derivative of their own: refuse double backward
// loudly rather than return a silently missing gradient.
inline void check_no_double_backward(const char* op, const char* layer,
                                     std::initializer_list<const at::Tensor*> tensors) {
  if (!at::GradMode::is_enabled()) return;
  for (const at::Tensor* t : tensors) {
    TORCH_CHECK(!(t->defined() && t->requires_grad()), op, ": double backward (create_graph=True through ", layer,
                ") is not supported");
  }
}

}  // namespace fastlayers
