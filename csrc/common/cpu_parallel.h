// How the CPU kernels of every op split work over threads.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>

namespace fastlayers {
namespace cpu {

// Below this many multiply-adds (or elements, for a pass over memory) work
// runs on the calling thread: waking the pool costs more than the work.
constexpr int64_t kSerialWork = int64_t(1) << 17;

// f(begin, end) over [0, n): on the calling thread when `serial` (or n <= 1),
// else split by at::parallel_for with grain 1. Either way every index is
// visited exactly once, so a caller whose tasks each own their output gets
// the same result for any thread count.
template <typename F>
void maybe_parallel(bool serial, int64_t n, const F& f) {
  if (serial || n <= 1) {
    f(0, n);
  } else {
    at::parallel_for(0, n, 1, f);
  }
}

}  // namespace cpu
}  // namespace fastlayers
