// 512-bit vector traits for cpu_gemm_microkernels.inl, shared by the units
// compiled with AVX-512 (avx512, avx512_bf16, amx). Included inside a unit's
// anonymous namespace, under its target pragma.

struct Avx512Float {
  using Acc = float;
  using V = __m512;
  static constexpr int W = 16;
  static __mmask16 mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static V zero() { return _mm512_setzero_ps(); }
  static V set1(float s) { return _mm512_set1_ps(s); }
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static V load_n(const float* p, int n) { return _mm512_maskz_loadu_ps(mask(n), p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static void store_n(float* p, V v, int n) { _mm512_mask_storeu_ps(p, mask(n), v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V relu(V v) { return _mm512_max_ps(_mm512_setzero_ps(), v); }  // max(0, NaN) = NaN
  static float sum(V v) { return _mm512_reduce_add_ps(v); }
};

struct Avx512Double {
  using Acc = double;
  using V = __m512d;
  static constexpr int W = 8;
  static __mmask8 mask(int n) { return static_cast<__mmask8>((1u << n) - 1u); }
  static V zero() { return _mm512_setzero_pd(); }
  static V set1(double s) { return _mm512_set1_pd(s); }
  static V load(const double* p) { return _mm512_loadu_pd(p); }
  static V load_n(const double* p, int n) { return _mm512_maskz_loadu_pd(mask(n), p); }
  static void store(double* p, V v) { _mm512_storeu_pd(p, v); }
  static void store_n(double* p, V v, int n) { _mm512_mask_storeu_pd(p, mask(n), v); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
  static V relu(V v) { return _mm512_max_pd(_mm512_setzero_pd(), v); }
  static double sum(V v) { return _mm512_reduce_add_pd(v); }
};
