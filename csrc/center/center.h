// Argument rules and memory layout of fastlayers::center, shared by the CPU
// and CUDA kernels.
//
//   center(input, dim=None) = input - input.mean(dim, keepdim=True)
//
// `dim` None (or empty) centers over every element. Every case is laid out
// as a contiguous [outer, reduce, inner] problem: each of the outer x inner
// groups of `reduce` elements is centered on its own mean.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/WrapDimMinimal.h>
#include <c10/macros/Macros.h>
#include <c10/util/OptionalArrayRef.h>

#include <algorithm>
#include <vector>

#include "../common/checks.h"

namespace fastlayers {

constexpr const char* kCenter = "fastlayers::center";

// A group's shift: its first element, or 0 where that is infinite or NaN:
// an infinite shift would turn x - s into NaN for every x, where x - mean
// gives -inf (or +inf) for the finite ones. s - s == 0 exactly when s is finite.
template <typename A>
C10_HOST_DEVICE inline A center_shift(A first) {
  return first - first == A(0) ? first : A(0);
}

// The dims to reduce, wrapped and sorted; every dim when `dim` is None or
// empty. Rejects out-of-range and repeated dims.
inline std::vector<int64_t> center_dims(const at::Tensor& input, at::OptionalIntArrayRef dim) {
  check_floating(kCenter, "input", input);
  const int64_t ndim = input.dim();
  std::vector<int64_t> dims;
  if (!dim.has_value() || dim->empty()) {
    for (int64_t d = 0; d < ndim; ++d) dims.push_back(d);
    return dims;
  }
  for (const int64_t d : *dim) {
    // A 0-d tensor accepts dim 0 and -1, as torch.mean does.
    const int64_t range = std::max<int64_t>(ndim, 1);
    TORCH_CHECK(d >= -range && d < range, kCenter, ": dim ", d, " is out of range for a tensor of ", ndim,
                " dimensions (expected a dim in [", -range, ", ", range - 1, "])");
    const int64_t wrapped = d < 0 ? d + range : d;
    TORCH_CHECK(std::find(dims.begin(), dims.end(), wrapped) == dims.end(), kCenter, ": dim ", wrapped,
                " appears more than once in dim=", *dim);
    dims.push_back(wrapped);
  }
  std::sort(dims.begin(), dims.end());
  if (ndim == 0) dims.clear();
  return dims;
}

struct CenterLayout {
  at::Tensor x;  // contiguous, dims ordered [outer..., reduced..., inner...]
  int64_t outer = 1, reduce = 1, inner = 1;
  std::vector<int64_t> perm;  // x = input.permute(perm), empty if no permute
};

// Reduced dims that are adjacent keep the tensor's order (no copy for a
// contiguous input); others are moved to the end by one permuted copy.
inline CenterLayout center_layout(const at::Tensor& input, const std::vector<int64_t>& dims) {
  CenterLayout l;
  const int64_t ndim = input.dim();
  const bool adjacent = dims.empty() || dims.back() - dims.front() + 1 == static_cast<int64_t>(dims.size());
  if (adjacent) {
    l.x = input.contiguous();
    const int64_t first = dims.empty() ? 0 : dims.front();
    const int64_t last = dims.empty() ? ndim : dims.back() + 1;
    for (int64_t d = 0; d < ndim; ++d) {
      const int64_t s = input.size(d);
      (d < first ? l.outer : d < last ? l.reduce : l.inner) *= s;
    }
    return l;
  }
  for (int64_t d = 0; d < ndim; ++d)
    if (!std::binary_search(dims.begin(), dims.end(), d)) {
      l.perm.push_back(d);
      l.outer *= input.size(d);
    }
  for (const int64_t d : dims) {
    l.perm.push_back(d);
    l.reduce *= input.size(d);
  }
  l.x = input.permute(l.perm).contiguous();
  return l;
}

// The result in the input's dim order.
inline at::Tensor center_result(const at::Tensor& out, const CenterLayout& l) {
  if (l.perm.empty()) return out;
  std::vector<int64_t> inverse(l.perm.size());
  for (size_t i = 0; i < l.perm.size(); ++i) inverse[l.perm[i]] = i;
  return out.permute(inverse);
}

// The call of the op through the dispatcher (schema.cpp), for its autograd
// kernel, which redispatches.
at::Tensor center_call(const at::Tensor& input, at::OptionalIntArrayRef dim);

}  // namespace fastlayers
