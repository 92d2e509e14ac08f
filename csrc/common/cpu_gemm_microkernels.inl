// The FMA kernels of cpu_gemm_kernels.h, written once over a vector trait S
// and compiled by each ISA unit under its own target pragma, inside that
// unit's anonymous namespace (so no two units share a symbol compiled for
// different instruction sets).
//
// S provides: type V, width W (elements of Acc), zero(), set1(x),
// load(p) / store(p, v), load_n(p, n) / store_n(p, v, n) for the first n < W
// lanes, fma(a, b, c) = a * b + c, add(a, b), relu(v) (max(0, v), keeping a
// NaN as torch.relu does) and sum(v) (all lanes added).
//
// Included after <cstdint>, <algorithm> and the ISA's intrinsics header.

// Stores an MR x (NV vectors) accumulator block: overwrite or accumulate
// into C, then the bias and ReLU; rows >= mr and columns >= nr are left alone.
template <typename S, int MR, int NV>
inline __attribute__((always_inline)) void store_block(typename S::V (&acc)[MR][NV], typename S::Acc* c, int64_t ldc,
                                                       int mr, int nr, bool accumulate, const typename S::Acc* bias,
                                                       bool relu) {
  using V = typename S::V;
  constexpr int W = S::W;
  if (mr == MR && nr == NV * W) {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = bias ? S::load(bias + v * W) : S::zero();
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        V x = acc[r][v];
        if (accumulate) x = S::add(x, S::load(c + r * ldc + v * W));
        if (bias) x = S::add(x, bv[v]);
        if (relu) x = S::relu(x);
        S::store(c + r * ldc + v * W, x);
      }
    }
    return;
  }
  int count[NV];
  V bv[NV];
#pragma GCC unroll 4
  for (int v = 0; v < NV; ++v) {
    count[v] = std::max(0, std::min(W, nr - v * W));
    bv[v] = (bias && count[v]) ? S::load_n(bias + v * W, count[v]) : S::zero();
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    if (r >= mr) break;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (!count[v]) continue;
      V x = acc[r][v];
      if (accumulate) x = S::add(x, S::load_n(c + r * ldc + v * W, count[v]));
      if (bias) x = S::add(x, bv[v]);
      if (relu) x = S::relu(x);
      S::store_n(c + r * ldc + v * W, x, count[v]);
    }
  }
}

// MR x (NV * W) outputs from KMajor panels: per k step, NV vector loads of B
// and MR broadcasts of A, MR * NV independent FMAs.
template <typename S, int MR, int NV>
void fma_tile(int64_t kc, const typename S::Acc* a, const typename S::Acc* b, typename S::Acc* c, int64_t ldc, int mr,
              int nr, bool accumulate, const typename S::Acc* bias, bool relu) {
  using V = typename S::V;
  constexpr int W = S::W;
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) acc[r][v] = S::zero();
  for (int64_t p = 0; p < kc; ++p) {
    V bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = S::load(b + v * W);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const V av = S::set1(a[r]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[r][v] = S::fma(av, bv[v], acc[r][v]);
    }
    a += MR;
    b += NV * W;
  }
  store_block<S, MR, NV>(acc, c, ldc, mr, nr, accumulate, bias, relu);
}

// Up to four rows of A against columns of B that are contiguous along k:
// one dot product per output, nothing packed (the chapter's 2 x 20 -> 256).
template <typename S>
void small_rows_dot(const typename S::Acc* a, int64_t lda, int64_t m, const typename S::Acc* b, int64_t ldb, int64_t k,
                    int64_t j0, int64_t j1, typename S::Acc* c, int64_t ldc, const typename S::Acc* bias, bool relu) {
  using Acc = typename S::Acc;
  using V = typename S::V;
  constexpr int W = S::W, kRows = 4;
  const int64_t kv = k - k % W;
  for (int64_t j = j0; j < j1; ++j) {
    const Acc* bj = b + j * ldb;
    V acc[kRows];
#pragma GCC unroll 4
    for (int i = 0; i < kRows; ++i) acc[i] = S::zero();
    for (int64_t p = 0; p < kv; p += W) {
      const V bv = S::load(bj + p);
#pragma GCC unroll 4
      for (int i = 0; i < kRows; ++i)
        if (i < m) acc[i] = S::fma(S::load(a + i * lda + p), bv, acc[i]);
    }
    for (int64_t i = 0; i < m; ++i) {
      Acc v = S::sum(acc[i]);
      for (int64_t p = kv; p < k; ++p) v += a[i * lda + p] * bj[p];
      if (bias) v += bias[j];
      if (relu && v < Acc(0)) v = Acc(0);
      c[i * ldc + j] = v;
    }
  }
}

// A few rows of A against B with contiguous rows: each output row is a sum
// of scaled B rows, which the compiler vectorises along N for the unit's ISA.
template <typename Acc>
void small_rows_axpy(const Acc* __restrict__ a, int64_t lda, int64_t m, const Acc* __restrict__ b, int64_t ldb,
                     int64_t k, int64_t n, Acc* __restrict__ c, int64_t ldc, const Acc* __restrict__ bias, bool relu) {
  for (int64_t i = 0; i < m; ++i) {
    Acc* ci = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) ci[j] = Acc(0);
    for (int64_t p = 0; p < k; ++p) {
      const Acc av = a[i * lda + p];
      const Acc* bp = b + p * ldb;
      for (int64_t j = 0; j < n; ++j) ci[j] += av * bp[j];
    }
    if (bias)
      for (int64_t j = 0; j < n; ++j) ci[j] += bias[j];
    if (relu)
      for (int64_t j = 0; j < n; ++j) ci[j] = ci[j] < Acc(0) ? Acc(0) : ci[j];
  }
}

template <typename S, int MR, int NV>
KernelSet<typename S::Acc> kernel_set() {
  using Acc = typename S::Acc;
  KernelSet<Acc> k;
  k.tile = {MR, NV * S::W, 1, Layout::KMajor, Layout::KMajor, &fma_tile<S, MR, NV>};
  k.small_rows_dot = &small_rows_dot<S>;
  k.small_rows_axpy = &small_rows_axpy<Acc>;
  return k;
}
