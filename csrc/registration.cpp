// The fastlayers library: its switches (which matrix product and which CPU
// instruction set the kernels use) and the Python module's entry point. Each
// op's schema is a fragment in csrc/<op>/schema.cpp; its kernels attach per
// dispatch key in the files beside it (cpu.cpp, cuda.cu, autograd.cpp,
// autocast.cpp); the fake kernels for tracing live in fastlayers/ops.py.
#include <Python.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cstdlib>
#include <iterator>
#include <sstream>
#include <string>

#include "common/cpu_features.h"
#include "common/gemm_policy.h"

namespace {

// Sets the CUDA matrix-product policy (0 auto, 1 fastlayers, 2 vendor; see
// common/gemm_policy.h) and returns the previous one.
int64_t set_cuda_gemm_policy(int64_t policy) {
  TORCH_CHECK(policy >= 0 && policy <= 2,
              "fastlayers::set_cuda_gemm_policy: argument 'policy' must be 0 (auto), "
              "1 (fastlayers) or 2 (vendor), got ",
              policy);
  return fastlayers::cuda_gemm_policy().exchange(policy);
}

// Turns the switched CUDA kernels on or off (a bit set of
// fastlayers::CudaExperimental; see common/gemm_policy.h); returns the
// previous set.
int64_t set_cuda_experimental_kernels(int64_t flags) {
  TORCH_CHECK(flags >= 0 && flags <= fastlayers::kAllCudaExperimental,
              "fastlayers::set_cuda_experimental_kernels: argument 'flags' must be a bit set within ",
              fastlayers::kAllCudaExperimental,
              " (1 split_k, 2 tensor_core_backward, 4 float_warp_tiled, 8 wgmma, 16 wgmma_wide, 32 split_k_float32, 64 "
              "float_warp_pipelined), got ",
              flags);
  return fastlayers::cuda_experimental_kernels().exchange(flags);
}

int64_t set_cpu_gemm_policy(int64_t policy) {
  TORCH_CHECK(policy >= 0 && policy <= 2,
              "fastlayers::set_cpu_gemm_policy: argument 'policy' must be 0 (auto), "
              "1 (fastlayers) or 2 (vendor), got ",
              policy);
  return fastlayers::cpu_gemm_policy().exchange(policy);
}

int64_t set_cpu_isa(int64_t isa) { return fastlayers::cpu::set_isa(isa); }

// Whether a product C[m, n] += A[m, k] B[k, n] of this dtype, in the forward
// or the backward, goes to the vendor's GEMM under the policy now set: what
// the benchmarks record as each case's route.
bool uses_vendor_gemm(const std::string& device, c10::ScalarType dtype, int64_t m, int64_t n, int64_t k, bool backward,
                      bool vector_layout) {
  TORCH_CHECK(device == "cpu" || device == "cuda", "fastlayers::uses_vendor_gemm: argument 'device' must be 'cpu' or ",
              "'cuda', got '", device, "'");
  TORCH_CHECK(m >= 0 && n >= 0 && k >= 0, "fastlayers::uses_vendor_gemm: sizes must be non-negative, got m=", m,
              ", n=", n, ", k=", k);
  const fastlayers::GemmPass pass = backward ? fastlayers::GemmPass::Backward : fastlayers::GemmPass::Forward;
  return device == "cpu" ? fastlayers::use_vendor_cpu_gemm(pass, dtype, m, n, k)
                         : fastlayers::use_vendor_gemm(pass, dtype, m, n, k, vector_layout);
}

// "key=value" lines: the CPU's instruction sets as the kernels see them.
std::string cpu_features() {
  using namespace fastlayers::cpu;
  std::string s = std::string("best=") + isa_name(best_isa()) + "\ndefault=" + isa_name(default_isa()) +
                  "\nactive=" + isa_name(active_isa()) + "\nsupported=";
  for (int64_t i = 0; i < kIsaCount; ++i)
    if (isa_supported(static_cast<Isa>(i))) s += std::string(i ? "," : "") + isa_name(static_cast<Isa>(i));
  const CacheSizes& c = cache_sizes();
  s += "\namx=" + amx_status() + "\ncore=" + core_name(core()) + "\nl1d=" + std::to_string(c.l1d) +
       "\nl2=" + std::to_string(c.l2) + "\nl3=" + std::to_string(c.l3);
  return s;
}

}  // namespace

namespace fastlayers {
// FASTLAYERS_CUDA_EXPERIMENTAL: comma-separated kernel names, "all" or "none";
// unset: kDefaultCudaKernels.
int64_t cuda_experimental_from_environment() {
  const char* value = std::getenv("FASTLAYERS_CUDA_EXPERIMENTAL");
  if (value == nullptr) return kDefaultCudaKernels;
  int64_t flags = 0;
  std::stringstream names(value);
  std::string name;
  while (std::getline(names, name, ',')) {
    if (name.empty() || name == "none") continue;
    if (name == "all") {
      flags |= kAllCudaExperimental;
      continue;
    }
    int64_t bit = 0;
    for (size_t i = 0; i < std::size(kCudaExperimentalNames); ++i)
      if (name == kCudaExperimentalNames[i]) bit = int64_t(1) << i;
    TORCH_CHECK(
        bit != 0, "fastlayers: environment variable FASTLAYERS_CUDA_EXPERIMENTAL names an unknown kernel '", name,
        "'; known: all, none, split_k, tensor_core_backward, float_warp_tiled, wgmma, wgmma_wide, split_k_float32, "
        "float_warp_pipelined");
    flags |= bit;
  }
  return flags;
}
}  // namespace fastlayers

TORCH_LIBRARY(fastlayers, m) {
  // Which matrix product the CUDA ops use, and which of fastlayers' switched
  // CUDA kernels are on; see common/gemm_policy.h.
  m.def("set_cuda_gemm_policy(int policy) -> int", &set_cuda_gemm_policy);
  // The same on the CPU, and which instruction set the CPU kernels use (-1
  // auto; see common/cpu_features.h); cpu_features() reports what was found.
  m.def("set_cuda_experimental_kernels(int flags) -> int", &set_cuda_experimental_kernels);
  m.def("set_cpu_gemm_policy(int policy) -> int", &set_cpu_gemm_policy);
  m.def("set_cpu_isa(int isa) -> int", &set_cpu_isa);
  m.def("cpu_features() -> str", &cpu_features);
  // Which GEMM a product of a given size takes now (for the benchmarks).
  m.def(
      "uses_vendor_gemm(str device, ScalarType dtype, int m, int n, int k, bool backward, bool vector_layout=True) "
      "-> bool",
      &uses_vendor_gemm);
}

// `import fastlayers._C` runs the registrations above; the module itself
// holds nothing.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
