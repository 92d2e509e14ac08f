// center's schema, and its typed call through the dispatcher (declared in
// center.h).
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include "center.h"

namespace fastlayers {

// input - input.mean(dim, keepdim=True); dim None: every element. It is its
// own backward (centering is self-adjoint); see center.h.
TORCH_LIBRARY_FRAGMENT(fastlayers, m) { m.def("center(Tensor input, int[]? dim=None) -> Tensor"); }

at::Tensor center_call(const at::Tensor& input, at::OptionalIntArrayRef dim) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow(kCenter, "")
                             .typed<at::Tensor(const at::Tensor&, at::OptionalIntArrayRef)>();
  return op.call(input, dim);
}

}  // namespace fastlayers
