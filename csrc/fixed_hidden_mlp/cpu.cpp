// CPU kernels of the fixed_hidden_mlp ops: three products of
// common/cpu_gemm.h (bias, "+1" and ReLU in their stores), one pass for
// sum|h3| in double, and the halving applied as one exact power of two.
// The backward is five products, with the ReLU mask applied while packing
// and both bias gradients taken as row sums inside the weight products.
// Where the auto policy (common/gemm_policy.h) measured oneDNN/MKL faster on
// this CPU, the products go there (ATen calls) and the rest stays as is.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <type_traits>

#include <ATen/ops/addmm.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/threshold_backward.h>

#include "../common/cpu_features.h"
#include "../common/cpu_gemm.h"
#include "../common/gemm_policy.h"
#include "../common/shapes.h"
#include "fixed_hidden_mlp.h"

namespace fastlayers {
namespace {

constexpr int64_t kSumChunk = int64_t(1) << 14;

struct Sums {
  double abs = 0, plain = 0;
};

// sum |x| and sum x over one chunk, in double, in 16 independent lanes a
// compiler can vectorise (a single chain of double adds is latency-bound:
// 1M bfloat16 elements took ~0.5 ms that way) and a pairwise combine.
// Half precision through float (the conversion compilers vectorise).
template <typename T>
inline double widen(T v) {
  if constexpr (std::is_same_v<T, double> || std::is_same_v<T, float>) {
    return static_cast<double>(v);
  } else {
    return static_cast<double>(static_cast<float>(v));
  }
}

template <typename T>
inline __attribute__((always_inline)) Sums chunk_sums_body(const T* __restrict__ x, int64_t n) {
  constexpr int L = 16;
  double abs_lane[L] = {}, plain_lane[L] = {};
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int j = 0; j < L; ++j) {
      const double v = widen(x[i + j]);
      abs_lane[j] += std::fabs(v);
      plain_lane[j] += v;
    }
  for (int w = L / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) abs_lane[j] += abs_lane[j + w], plain_lane[j] += plain_lane[j + w];
  Sums s{abs_lane[0], plain_lane[0]};
  for (; i < n; ++i) {
    const double v = widen(x[i]);
    s.abs += std::fabs(v);
    s.plain += v;
  }
  return s;
}

template <typename T>
Sums portable_chunk_sums(const T* x, int64_t n) {
  return chunk_sums_body(x, n);
}
#if defined(__x86_64__)
template <typename T>
__attribute__((target("avx512f,avx512bw,avx512vl,prefer-vector-width=512"))) Sums avx512_chunk_sums(const T* x,
                                                                                                    int64_t n) {
  return chunk_sums_body(x, n);
}
#endif

// sum |x| and sum x over n contiguous elements, in double, in fixed chunks
// combined in order (the same result for any thread count).
template <typename T>
Sums sums_in_double(const T* x, int64_t n) {
  Sums (*chunk)(const T*, int64_t) = &portable_chunk_sums<T>;
#if defined(__x86_64__)
  if (cpu::vector_isa() >= cpu::Isa::Avx512) chunk = &avx512_chunk_sums<T>;
#endif
  auto chunk_sums = [&](int64_t c) { return chunk(x + c * kSumChunk, std::min(kSumChunk, n - c * kSumChunk)); };
  const int64_t chunks = (n + kSumChunk - 1) / kSumChunk;
  if (chunks <= 1) return chunk_sums(0);
  std::vector<Sums> partial(static_cast<size_t>(chunks));
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) partial[c] = chunk_sums(c);
  });
  Sums total;
  for (const Sums& p : partial) total.abs += p.abs, total.plain += p.plain;
  return total;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fixed_hidden_mlp_cpu(const at::Tensor& input, const at::Tensor& weight,
                                                                    const at::Tensor& bias,
                                                                    const at::Tensor& rand_weight, bool return_sum) {
  check_fixed_hidden_mlp_args(input, weight, bias, rand_weight);
  const int64_t f = weight.size(0);
  const at::Tensor x = as_matrix(input);
  const int64_t m = x.size(0);
  at::Tensor hidden = at::empty({m, f}, input.options());
  at::Tensor h = at::empty({m, f}, input.options());  // h1, then h3 (and the output)
  int64_t k = 0;
  at::Tensor out;
  const bool vendor = use_vendor_cpu_gemm(GemmPass::Forward, input.scalar_type(), m, f, f);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "fixed_hidden_mlp_cpu", [&] {
    using T = scalar_t;
    using Acc = at::opmath_type<T>;
    std::vector<Acc> bias_copy;
    const Acc* b = cpu::bias_in_acc<T, Acc>(bias, bias_copy);
    if (vendor) {  // the same three products on oneDNN/MKL (common/gemm_policy.h)
      at::addmm_out(h, bias, x, weight.t());
      at::mm_out(hidden, h, rand_weight).add_(1).relu_();
      at::addmm_out(h, bias, hidden, weight.t());
    } else {
      const std::vector<Acc> ones(static_cast<size_t>(f), Acc(1));
      const auto w_t = cpu::view_of<T>(weight).transposed();
      cpu::gemm<T, Acc>(cpu::view_of<T>(x), nullptr, w_t, h.data_ptr<T>(), f, {b, false}, nullptr);
      cpu::gemm<T, Acc>(cpu::view_of<T>(h), nullptr, cpu::view_of<T>(rand_weight), hidden.data_ptr<T>(), f,
                        {ones.data(), true}, nullptr);
      cpu::gemm<T, Acc>(cpu::view_of<T>(hidden), nullptr, w_t, h.data_ptr<T>(), f, {b, false}, nullptr);
    }
    T* h3 = h.data_ptr<T>();
    const int64_t n = m * f;
    const Sums sums = sums_in_double(h3, n);
    k = halvings_for(sums.abs);
    const int e = static_cast<int>(-k);
    if (return_sum) {
      out = at::empty({}, input.options());
      *out.data_ptr<T>() = static_cast<T>(std::ldexp(sums.plain, e));
    } else {
      if (k != 0)
        for (int64_t i = 0; i < n; ++i) h3[i] = static_cast<T>(std::ldexp(static_cast<Acc>(h3[i]), e));
      out = h.view(input.sizes());
    }
  });
  at::Tensor halvings = at::empty({}, input.options().dtype(at::kLong));
  *halvings.data_ptr<int64_t>() = k;
  return {out, hidden, halvings};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fixed_hidden_mlp_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& rand_weight,
    const at::Tensor& hidden, const at::Tensor& halvings, bool return_sum, bool input_grad) {
  const int64_t m =
      check_fixed_hidden_mlp_backward_args(grad_output, input, weight, rand_weight, hidden, halvings, return_sum);
  const int64_t f = weight.size(0);
  const at::Tensor x = as_matrix(input);
  const int e = static_cast<int>(-halvings.item<int64_t>());
  const auto opts = input.options();
  const bool vendor = use_vendor_cpu_gemm(GemmPass::Backward, input.scalar_type(), m, f, f);
  at::Tensor grad_input = input_grad ? at::empty({m, f}, opts) : at::empty({0}, opts);
  at::Tensor grad_weight = at::empty({f, f}, opts), grad_bias = at::empty({f}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "fixed_hidden_mlp_backward_cpu", [&] {
    using T = scalar_t;
    using Acc = at::opmath_type<T>;
    const auto acc_type = c10::CppTypeToScalarType<Acc>::value;
    auto column_sums_into = [&](const at::Tensor& t, std::vector<Acc>& sums) {  // in Acc, as the bias gradient
      const at::Tensor s = at::sum(t, {0}, false, acc_type);
      std::copy(s.const_data_ptr<Acc>(), s.const_data_ptr<Acc>() + f, sums.begin());
    };
    // Second use of the linear, h3 = h2 @ W.T + b, with grad3 = the incoming
    // gradient times 2^-k (k held constant): grad2 = grad3 @ W, and that
    // use's weight gradient grad3.T @ h2 and bias gradient (grad3's column
    // sums, in Acc).
    at::Tensor grad2, grad_weight_second;
    std::vector<Acc> bias_second(static_cast<size_t>(f));
    if (return_sum) {
      // grad3 is one constant g, so both products are column sums: every
      // row of grad2 is g * (W's column sums), every row of the weight
      // gradient g * (h2's column sums). Broadcast rows, nothing materialised.
      const Acc g =
          static_cast<Acc>(static_cast<T>(std::ldexp(static_cast<Acc>(grad_output.reshape({}).item<T>()), e)));
      grad2 = at::sum(weight, {0}, false, acc_type).mul_(g).to(input.scalar_type()).expand({m, f});
      grad_weight_second = at::sum(hidden, {0}, false, acc_type).mul_(g).to(input.scalar_type()).expand({f, f});
      std::fill(bias_second.begin(), bias_second.end(), g * static_cast<Acc>(m));
    } else {
      at::Tensor grad3 = at::empty({m, f}, opts);
      T* g3 = grad3.data_ptr<T>();
      const auto gv = cpu::view_of<T>(as_matrix(grad_output));
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < f; ++j) g3[i * f + j] = static_cast<T>(std::ldexp(static_cast<Acc>(gv(i, j)), e));
      grad2 = at::empty({m, f}, opts), grad_weight_second = at::empty({f, f}, opts);
      if (vendor) {  // oneDNN/MKL (common/gemm_policy.h)
        at::mm_out(grad2, grad3, weight);
        at::mm_out(grad_weight_second, grad3.t(), hidden);
        column_sums_into(grad3, bias_second);
      } else {
        const auto g3v = cpu::view_of<T>(grad3);
        cpu::gemm<T, Acc>(g3v, nullptr, cpu::view_of<T>(weight), grad2.data_ptr<T>(), f, {}, nullptr);
        cpu::gemm<T, Acc>(g3v.transposed(), nullptr, cpu::view_of<T>(hidden), grad_weight_second.data_ptr<T>(), f, {},
                          bias_second.data());
      }
    }
    // h2 = relu(h1 @ C + 1): grad1 = (grad2 masked by h2 > 0) @ C.T; then
    // the first use of the linear, h1 = x @ W.T + b.
    at::Tensor grad1 = at::empty({m, f}, opts);
    std::vector<Acc> bias_first(static_cast<size_t>(f));
    if (vendor) {
      at::mm_out(grad1, at::threshold_backward(grad2, hidden, 0), rand_weight.t());
      if (input_grad) at::mm_out(grad_input, grad1, weight);
      at::addmm_out(grad_weight, grad_weight_second, grad1.t(), x);
      column_sums_into(grad1, bias_first);
    } else {
      const auto h2 = cpu::view_of<T>(hidden);
      cpu::gemm<T, Acc>(cpu::view_of<T>(grad2), &h2, cpu::view_of<T>(rand_weight).transposed(), grad1.data_ptr<T>(), f,
                        {}, nullptr);  // the mask applied while packing
      const auto g1v = cpu::view_of<T>(grad1);
      if (input_grad)
        cpu::gemm<T, Acc>(g1v, nullptr, cpu::view_of<T>(weight), grad_input.data_ptr<T>(), f, {}, nullptr);
      cpu::gemm<T, Acc>(g1v.transposed(), nullptr, cpu::view_of<T>(x), grad_weight.data_ptr<T>(), f, {},
                        bias_first.data());
      // Both uses' weight gradients added in Acc.
      const auto second = cpu::view_of<T>(grad_weight_second);
      T* gw = grad_weight.data_ptr<T>();
      for (int64_t i = 0; i < f; ++i)
        for (int64_t j = 0; j < f; ++j)
          gw[i * f + j] = static_cast<T>(static_cast<Acc>(gw[i * f + j]) + static_cast<Acc>(second(i, j)));
    }
    T* gb = grad_bias.data_ptr<T>();
    for (int64_t j = 0; j < f; ++j) gb[j] = static_cast<T>(bias_second[j] + bias_first[j]);
  });
  return {input_grad ? grad_input.view(input.sizes()) : grad_input, grad_weight, grad_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CPU, m) {
  m.impl("fixed_hidden_mlp", &fixed_hidden_mlp_cpu);
  m.impl("fixed_hidden_mlp_backward", &fixed_hidden_mlp_backward_cpu);
}

}  // namespace fastlayers
