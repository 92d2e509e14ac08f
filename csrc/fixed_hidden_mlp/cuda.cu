// CUDA kernels of the fixed_hidden_mlp ops, with no host synchronisation:
// the halving count is computed by a kernel, stored on the device and read
// there by the kernels that apply it.
//
//   small problems (the chapter's 2x20, 64x20): one block does everything in
//       shared memory, a single launch;
//   larger ones: three products, a partial-sum kernel (|h| and h, in
//       double, fixed order), a finalize kernel that computes k, and
//       (return_sum=False) a scale kernel.
// Backward: small problems in one block and one launch, like the forward;
// larger ones as a scale kernel, five products and the additions of the two
// uses of the weight, all on the current stream.
// The products of the larger problems are common/cuda_gemm.h's (mask and
// bias-gradient row sums fused) or, per common/gemm_policy.h, the vendor's
// through ATen (the bias epilogue, and relu_ after the hidden layer's).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/threshold_backward.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../common/cuda_gemm.h"
#include "../common/cuda_reduce.cuh"
#include "../common/gemm_policy.h"
#include "../common/shapes.h"
#include "fixed_hidden_mlp.h"

namespace fastlayers {
namespace {

using cuda::strided;
using cuda::strided_t;

constexpr int kBlock = 256;
constexpr int64_t kSumChunk = 8192;
// Dynamic shared memory the fused kernel may use: 48 KB without opting in,
// less its own static scratch (kept well clear).
constexpr size_t kFusedSharedBytes = 48 * 1024 - 512;

// The whole block in one launch: x [m, f] (strided), everything else in
// shared memory as Acc.
template <typename T, typename Acc>
__global__ void __launch_bounds__(kBlock)
    fused_small_kernel(cuda::StridedMatrix<T> x, const T* w, int64_t w_rs, int64_t w_cs, const T* b, int64_t b_s,
                       const T* c, int64_t c_rs, int64_t c_cs, int m, int f, bool return_sum, T* out, T* hidden,
                       int64_t* halvings) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Acc* ws = reinterpret_cast<Acc*>(smem_raw);  // [f, f]
  Acc* cs = ws + f * f;                        // [f, f]
  Acc* bs = cs + f * f;                        // [f]
  Acc* ha = bs + f;                            // [m, f]
  Acc* hb = ha + m * f;                        // [m, f]
  const int n = m * f;
  for (int i = threadIdx.x; i < f * f; i += kBlock) {
    const int r = i / f, q = i % f;
    ws[i] = static_cast<Acc>(w[r * w_rs + q * w_cs]);
    cs[i] = static_cast<Acc>(c[r * c_rs + q * c_cs]);
  }
  for (int i = threadIdx.x; i < f; i += kBlock) bs[i] = static_cast<Acc>(b[i * b_s]);
  for (int i = threadIdx.x; i < n; i += kBlock) ha[i] = static_cast<Acc>(x(i / f, i % f));
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += kBlock) {  // h1 = x W.T + b
    const int r = i / f, j = i % f;
    Acc s = Acc(0);  // the product first, then the bias: the GEMM path's order
    for (int p = 0; p < f; ++p) s += ha[r * f + p] * ws[j * f + p];
    hb[i] = static_cast<Acc>(static_cast<T>(s + bs[j]));  // rounded to T, as the unfused path stores it
  }
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += kBlock) {  // h2 = relu(h1 C + 1)
    const int r = i / f, j = i % f;
    Acc s = Acc(0);
    for (int p = 0; p < f; ++p) s += hb[r * f + p] * cs[p * f + j];
    s += Acc(1);
    const T h2 = static_cast<T>(s < Acc(0) ? Acc(0) : s);
    hidden[i] = h2;
    ha[i] = static_cast<Acc>(h2);
  }
  __syncthreads();
  double abs_sum = 0, sum = 0;
  for (int i = threadIdx.x; i < n; i += kBlock) {  // h3 = h2 W.T + b
    const int r = i / f, j = i % f;
    Acc s = Acc(0);
    for (int p = 0; p < f; ++p) s += ha[r * f + p] * ws[j * f + p];
    const T h3 = static_cast<T>(s + bs[j]);
    hb[i] = static_cast<Acc>(h3);
    abs_sum += fabs(static_cast<double>(h3));
    sum += static_cast<double>(h3);
  }
  abs_sum = cuda::block_sum<kBlock>(abs_sum);
  sum = cuda::block_sum<kBlock>(sum);
  __shared__ int64_t k_shared;
  if (threadIdx.x == 0) {
    k_shared = halvings_for(abs_sum);
    *halvings = k_shared;
    if (return_sum) *out = static_cast<T>(ldexp(sum, static_cast<int>(-k_shared)));
  }
  __syncthreads();
  if (!return_sum) {
    const int e = static_cast<int>(-k_shared);
    for (int i = threadIdx.x; i < n; i += kBlock) out[i] = static_cast<T>(ldexp(static_cast<double>(hb[i]), e));
  }
}

// The whole backward in one launch (shared memory as Acc; gradients rounded
// to T where the multi-kernel path stores them):
//   g3 = grad * 2^-k,  g2 = (g3 W) * (h2 > 0),  g1 = g2 C.T,
//   grad_input = g1 W,  grad_weight = g3.T h2 + g1.T x,  grad_bias = colsum(g3 + g1).
template <typename T, typename Acc>
__global__ void __launch_bounds__(kBlock)
    fused_small_backward_kernel(cuda::StridedMatrix<T> grad, cuda::StridedMatrix<T> x, cuda::StridedMatrix<T> w,
                                cuda::StridedMatrix<T> c, cuda::StridedMatrix<T> hidden, const int64_t* halvings, int m,
                                int f, T* grad_input, T* grad_weight, T* grad_bias) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  Acc* ws = reinterpret_cast<Acc*>(smem_raw);  // [f, f]
  Acc* cs = ws + f * f;                        // [f, f]
  Acc* xs = cs + f * f;                        // [m, f]
  Acc* hs = xs + m * f;                        // [m, f] h2
  Acc* g3 = hs + m * f;                        // [m, f]
  Acc* g2 = g3 + m * f;                        // [m, f], masked
  Acc* g1 = g2 + m * f;                        // [m, f]
  const int n = m * f;
  const int e = static_cast<int>(-*halvings);
  for (int i = threadIdx.x; i < f * f; i += kBlock)
    ws[i] = static_cast<Acc>(w(i / f, i % f)), cs[i] = static_cast<Acc>(c(i / f, i % f));
  for (int i = threadIdx.x; i < n; i += kBlock) {
    const int r = i / f, j = i % f;
    xs[i] = static_cast<Acc>(x(r, j));
    hs[i] = static_cast<Acc>(hidden(r, j));
    g3[i] = static_cast<Acc>(static_cast<T>(ldexp(static_cast<double>(grad(r, j)), e)));
  }
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += kBlock) {  // g2 = (g3 W) * (h2 > 0)
    const int r = i / f, j = i % f;
    Acc s = Acc(0);
    for (int p = 0; p < f; ++p) s += g3[r * f + p] * ws[p * f + j];
    g2[i] = hs[i] > Acc(0) ? static_cast<Acc>(static_cast<T>(s)) : Acc(0);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += kBlock) {  // g1 = g2 C.T
    const int r = i / f, j = i % f;
    Acc s = Acc(0);
    for (int p = 0; p < f; ++p) s += g2[r * f + p] * cs[j * f + p];
    g1[i] = static_cast<Acc>(static_cast<T>(s));
  }
  __syncthreads();
  for (int i = threadIdx.x; i < n; i += kBlock) {  // grad_input = g1 W
    const int r = i / f, j = i % f;
    Acc s = Acc(0);
    for (int p = 0; p < f; ++p) s += g1[r * f + p] * ws[p * f + j];
    grad_input[i] = static_cast<T>(s);
  }
  for (int q = threadIdx.x; q < f * f; q += kBlock) {  // both uses of the weight
    const int a = q / f, b = q % f;
    Acc s = Acc(0);
    for (int r = 0; r < m; ++r) s += g3[r * f + a] * hs[r * f + b];
    for (int r = 0; r < m; ++r) s += g1[r * f + a] * xs[r * f + b];
    grad_weight[q] = static_cast<T>(s);
  }
  for (int j = threadIdx.x; j < f; j += kBlock) {  // both uses of the bias
    Acc s = Acc(0);
    for (int r = 0; r < m; ++r) s += g3[r * f + j];
    for (int r = 0; r < m; ++r) s += g1[r * f + j];
    grad_bias[j] = static_cast<T>(s);
  }
}

// partial[2c] = sum |h| and partial[2c+1] = sum h over chunk c, in double.
template <typename T>
__global__ void __launch_bounds__(kBlock) partial_sums_kernel(const T* h, int64_t n, double* partial) {
  const int64_t c = blockIdx.x;
  double abs_sum = 0, sum = 0;
  for (int64_t i = c * kSumChunk + threadIdx.x; i < min(n, (c + 1) * kSumChunk); i += kBlock) {
    const double v = static_cast<double>(h[i]);
    abs_sum += fabs(v);
    sum += v;
  }
  abs_sum = cuda::block_sum<kBlock>(abs_sum);
  sum = cuda::block_sum<kBlock>(sum);
  if (threadIdx.x == 0) partial[2 * c] = abs_sum, partial[2 * c + 1] = sum;
}

// k from the partials (fixed order); the output scalar when return_sum.
template <typename T>
__global__ void __launch_bounds__(kBlock)
    finalize_kernel(const double* partial, int64_t chunks, bool return_sum, T* out, int64_t* halvings) {
  double abs_sum = 0, sum = 0;
  for (int64_t c = threadIdx.x; c < chunks; c += kBlock) abs_sum += partial[2 * c], sum += partial[2 * c + 1];
  abs_sum = cuda::block_sum<kBlock>(abs_sum);
  sum = cuda::block_sum<kBlock>(sum);
  if (threadIdx.x == 0) {
    const int64_t k = halvings_for(abs_sum);
    *halvings = k;
    if (return_sum) *out = static_cast<T>(ldexp(sum, static_cast<int>(-k)));
  }
}

// dst[r, c] = src(r, c) * 2^-k for an [m, f] result, k read on the device;
// src may be dst itself (the forward's in-place halving) or a broadcast
// scalar (strides 0: the gradient of h.sum()). Scaled in double, so 2^-k
// never underflows before the result does.
template <typename T>
__global__ void scale_kernel(cuda::StridedMatrix<T> src, T* dst, int64_t m, int64_t f, const int64_t* halvings) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kBlock + threadIdx.x;
  if (i >= m * f) return;
  const int e = static_cast<int>(-*halvings);
  dst[i] = static_cast<T>(ldexp(static_cast<double>(src(i / f, i % f)), e));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fixed_hidden_mlp_cuda(const at::Tensor& input, const at::Tensor& weight,
                                                                     const at::Tensor& bias,
                                                                     const at::Tensor& rand_weight, bool return_sum) {
  check_fixed_hidden_mlp_args(input, weight, bias, rand_weight);
  const c10::cuda::CUDAGuard guard(input.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t f = weight.size(0);
  const at::Tensor x = as_matrix(input);
  const int64_t m = x.size(0), n = m * f;
  const auto opts = input.options();
  at::Tensor hidden = at::empty({m, f}, opts);
  at::Tensor halvings = at::empty({}, opts.dtype(at::kLong));
  at::Tensor out = return_sum ? at::empty({}, opts) : at::empty({m, f}, opts);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "fixed_hidden_mlp_cuda", [&] {
    using T = scalar_t;
    using Acc = at::opmath_type<T>;
    const size_t fused_bytes = static_cast<size_t>(2 * f * f + f + 2 * n) * sizeof(Acc);
    if (fused_bytes <= kFusedSharedBytes && n > 0) {
      fused_small_kernel<T, Acc><<<1, kBlock, fused_bytes, stream>>>(
          strided<T>(x), weight.const_data_ptr<T>(), weight.stride(0), weight.stride(1), bias.const_data_ptr<T>(),
          bias.stride(0), rand_weight.const_data_ptr<T>(), rand_weight.stride(0), rand_weight.stride(1),
          static_cast<int>(m), static_cast<int>(f), return_sum, out.data_ptr<T>(), hidden.data_ptr<T>(),
          halvings.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    at::Tensor h = return_sum ? at::empty({m, f}, opts) : out;  // h1, then h3
    // Its products' layouts (C n-contiguous, transposed gradients) were not
    // the ones the raised half-precision crossovers were measured on.
    if (use_vendor_gemm(GemmPass::Forward, input.scalar_type(), m, f, f, /*vector_operands=*/false)) {
      at::addmm_out(h, bias, x, weight.t());                               // h1 = x W.T + b
      at::addmm_out(hidden, at::ones({f}, opts), h, rand_weight).relu_();  // h2 = relu(h1 C + 1), NaN kept
      at::addmm_out(h, bias, hidden, weight.t());                          // h3 = h2 W.T + b
    } else {
      const at::Tensor one = at::ones({1}, opts);  // the "+ 1": a bias of stride 0
      cuda::GemmArgs<T, Acc> g;
      g.M = m, g.N = f, g.K = f;
      g.ldc = f;
      // h1 = x W.T + b
      g.a = strided<T>(x), g.b = strided_t<T>(weight), g.c = h.data_ptr<T>();
      g.bias = bias.const_data_ptr<T>(), g.bias_stride = bias.stride(0);
      cuda::gemm(g, opts);
      // h2 = relu(h1 C + 1)
      g.a = strided<T>(h), g.b = strided<T>(rand_weight), g.c = hidden.data_ptr<T>();
      g.bias = one.const_data_ptr<T>(), g.bias_stride = 0, g.relu = true;
      cuda::gemm(g, opts);
      // h3 = h2 W.T + b
      g.a = strided<T>(hidden), g.b = strided_t<T>(weight), g.c = h.data_ptr<T>();
      g.bias = bias.const_data_ptr<T>(), g.bias_stride = bias.stride(0), g.relu = false;
      cuda::gemm(g, opts);
    }
    const int64_t chunks = std::max<int64_t>(1, (n + kSumChunk - 1) / kSumChunk);
    at::Tensor partial = at::empty({2 * chunks}, opts.dtype(at::kDouble));
    partial_sums_kernel<T>
        <<<static_cast<unsigned>(chunks), kBlock, 0, stream>>>(h.const_data_ptr<T>(), n, partial.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    finalize_kernel<T><<<1, kBlock, 0, stream>>>(partial.const_data_ptr<double>(), chunks, return_sum,
                                                 return_sum ? out.data_ptr<T>() : nullptr,
                                                 halvings.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (!return_sum && n > 0) {
      scale_kernel<T><<<cuda::blocks_for(n, kBlock), kBlock, 0, stream>>>(strided<T>(out), out.data_ptr<T>(), m, f,
                                                                          halvings.const_data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  if (!return_sum) out = out.view(input.sizes());
  return {out, hidden, halvings};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> fixed_hidden_mlp_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, const at::Tensor& rand_weight,
    const at::Tensor& hidden, const at::Tensor& halvings, bool return_sum, bool input_grad) {
  // checks first: a guard on an undefined or CPU input would throw a message that names no argument
  const int64_t m =
      check_fixed_hidden_mlp_backward_args(grad_output, input, weight, rand_weight, hidden, halvings, return_sum);
  const c10::cuda::CUDAGuard guard(input.device());
  const int64_t f = weight.size(0);
  const at::Tensor x = as_matrix(input);
  const auto opts = input.options();
  const at::Tensor grad_matrix = return_sum ? grad_output : as_matrix(grad_output);
  at::Tensor grad_input = at::empty({m, f}, opts), grad_weight = at::empty({f, f}, opts),
             grad_bias = at::empty({f}, opts);
  // grad_input is computed on every path, as on the GPU runs so far; skipping
  // its product when it is not wanted (as the CPU kernels do) waits for a GPU
  // to measure it on. Unwanted, it is returned as an empty [0] tensor.
  auto result = [&] {
    return FixedHiddenTriple{input_grad ? grad_input.view(input.sizes()) : at::empty({0}, opts), grad_weight,
                             grad_bias};
  };
  if (m == 0 || f == 0) {
    grad_weight.zero_(), grad_bias.zero_();
    return result();
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "fixed_hidden_mlp_backward_cuda", [&] {
    using T = scalar_t;
    using Acc = at::opmath_type<T>;
    // grad of h3 = grad_output * 2^-k (k held constant, read on the device).
    const cuda::StridedMatrix<T> g =
        return_sum ? cuda::StridedMatrix<T>{grad_matrix.const_data_ptr<T>(), 0, 0} : strided<T>(grad_matrix);
    const size_t fused_bytes = static_cast<size_t>(2 * f * f + 5 * m * f) * sizeof(Acc);
    if (fused_bytes <= kFusedSharedBytes) {
      fused_small_backward_kernel<T, Acc><<<1, kBlock, fused_bytes, c10::cuda::getCurrentCUDAStream()>>>(
          g, strided<T>(x), strided<T>(weight), strided<T>(rand_weight), strided<T>(hidden),
          halvings.const_data_ptr<int64_t>(), static_cast<int>(m), static_cast<int>(f), grad_input.data_ptr<T>(),
          grad_weight.data_ptr<T>(), grad_bias.data_ptr<T>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      return;
    }
    at::Tensor grad3 = at::empty({m, f}, opts), grad2 = at::empty({m, f}, opts), grad1 = at::empty({m, f}, opts);
    scale_kernel<T><<<cuda::blocks_for(m * f, kBlock), kBlock, 0, c10::cuda::getCurrentCUDAStream()>>>(
        g, grad3.data_ptr<T>(), m, f, halvings.const_data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (use_vendor_gemm(GemmPass::Backward, input.scalar_type(), m, f, f, /*vector_operands=*/false)) {
      at::mm_out(grad2, grad3, weight);  // second use of the linear
      at::mm_out(grad_weight, grad3.t(), hidden);
      at::sum_out(grad_bias, grad3, 0);
      at::mm_out(grad1, at::threshold_backward(grad2, hidden, 0), rand_weight.t());  // mask from h2, through C.T
      at::mm_out(grad_input, grad1, weight);                                         // first use
      grad_weight.addmm_(grad1.t(), x);
      grad_bias.add_(at::sum(grad1, 0));
      return;
    }
    at::Tensor grad_weight2 = at::empty({f, f}, opts), grad_bias2 = at::empty({f}, opts);
    auto product = [&](cuda::StridedMatrix<T> a, cuda::StridedMatrix<T> mask, cuda::StridedMatrix<T> b, int64_t rows,
                       int64_t reduce, at::Tensor& c, T* row_sums) {
      cuda::GemmArgs<T, Acc> g;
      g.a = a, g.mask = mask, g.b = b, g.c = c.data_ptr<T>(), g.ldc = f;
      g.M = rows, g.N = f, g.K = reduce, g.row_sums = row_sums;
      cuda::gemm(g, opts);
    };
    const cuda::StridedMatrix<T> none;
    // second use of the linear: h3 = h2 W.T + b
    product(strided<T>(grad3), none, strided<T>(weight), m, f, grad2, nullptr);
    product(strided_t<T>(grad3), none, strided<T>(hidden), f, m, grad_weight, grad_bias.data_ptr<T>());
    // h2 = relu(h1 C + 1): the mask from h2, then through C.T
    product(strided<T>(grad2), strided<T>(hidden), strided_t<T>(rand_weight), m, f, grad1, nullptr);
    // first use of the linear: h1 = x W.T + b
    product(strided<T>(grad1), none, strided<T>(weight), m, f, grad_input, nullptr);
    product(strided_t<T>(grad1), none, strided<T>(x), f, m, grad_weight2, grad_bias2.data_ptr<T>());
    grad_weight.add_(grad_weight2);
    grad_bias.add_(grad_bias2);
  });
  return result();
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CUDA, m) {
  m.impl("fixed_hidden_mlp", &fixed_hidden_mlp_cuda);
  m.impl("fixed_hidden_mlp_backward", &fixed_hidden_mlp_backward_cuda);
}

}  // namespace fastlayers
