// Portable kernels: plain C++ over arrays of lanes, for CPUs without AVX2
// (and other architectures). See cpu_gemm_kernels.h.
#include <algorithm>
#include <cstdint>

#include "cpu_gemm_kernels.h"

namespace fastlayers {
namespace cpu {
namespace portable {
namespace {

template <typename T, int kWidth>
struct Lanes {
  using Acc = T;
  static constexpr int W = kWidth;
  struct V {
    T x[W];
  };
  static V zero() { return set1(T(0)); }
  static V set1(T s) {
    V v;
    for (int i = 0; i < W; ++i) v.x[i] = s;
    return v;
  }
  static V load(const T* p) { return load_n(p, W); }
  static V load_n(const T* p, int n) {
    V v = zero();
    for (int i = 0; i < n; ++i) v.x[i] = p[i];
    return v;
  }
  static void store(T* p, V v) { store_n(p, v, W); }
  static void store_n(T* p, V v, int n) {
    for (int i = 0; i < n; ++i) p[i] = v.x[i];
  }
  static V fma(V a, V b, V c) {
    for (int i = 0; i < W; ++i) c.x[i] += a.x[i] * b.x[i];
    return c;
  }
  static V add(V a, V b) {
    for (int i = 0; i < W; ++i) a.x[i] += b.x[i];
    return a;
  }
  static V relu(V a) {
    for (int i = 0; i < W; ++i) a.x[i] = a.x[i] < T(0) ? T(0) : a.x[i];
    return a;
  }
  static T sum(V a) {
    T s = T(0);
    for (int i = 0; i < W; ++i) s += a.x[i];
    return s;
  }
};

#include "cpu_gemm_microkernels.inl"

}  // namespace

KernelSet<float> float_kernels() { return kernel_set<Lanes<float, 8>, 6, 2>(); }
KernelSet<double> double_kernels() { return kernel_set<Lanes<double, 4>, 6, 2>(); }

}  // namespace portable
}  // namespace cpu
}  // namespace fastlayers
