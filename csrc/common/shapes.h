// Shape helpers shared by the ops' kernels.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace fastlayers {

// Shape of a result whose last dimension replaces `t`'s last one.
inline std::vector<int64_t> with_last_dim(const at::Tensor& t, int64_t last) {
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end());
  shape.back() = last;
  return shape;
}

// `t` viewed as a matrix [rows, t.size(-1)]; copies only when no view exists.
inline at::Tensor as_matrix(const at::Tensor& t) {
  if (t.dim() == 2) return t;
  int64_t rows = 1;  // not -1: reshape cannot infer it when t is empty
  for (int64_t d = 0; d + 1 < t.dim(); ++d) rows *= t.size(d);
  return t.reshape({rows, t.size(-1)});
}

}  // namespace fastlayers
