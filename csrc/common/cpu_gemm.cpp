// The CPU GEMM driver (interface and contract: cpu_gemm.h): blocking,
// packing, threads and the epilogue's bookkeeping. The arithmetic is in the
// per-ISA kernels (cpu_gemm_kernels.h), picked here by cpu::active_isa().
//
// Blocking follows the usual packed-GEMM recipe, sized from the caches of
// the machine at hand: KC (the reduction block) keeps one packed B panel
// (KC x NR) within an eighth of L2; a row block of A panels (MC x KC)
// within a quarter of L2. A and B are packed once per call into panels laid out as
// the kernel asks (cpu_gemm_kernels.h Layout), zero-padded to whole panels.
#include "cpu_gemm.h"

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cstring>
#include <memory>

#include "cpu_features.h"
#include "cpu_gemm_kernels.h"

namespace fastlayers {
namespace cpu {

KernelSet<float> float_kernels(Isa isa) {
  switch (isa) {
    case Isa::Portable:
      return portable::float_kernels();
    case Isa::Avx2:
      return avx2::float_kernels();
    case Isa::AmxEmulated:  // the emulated unit multiplies bfloat16 only
      return float_kernels(default_isa());
    default: {
      KernelSet<float> k = avx512::float_kernels();
      k.transpose_8x8 = &avx2::transpose_8x8;
      return k;
    }
  }
}

KernelSet<double> double_kernels(Isa isa) {
  switch (isa) {
    case Isa::Portable:
      return portable::double_kernels();
    case Isa::Avx2:
      return avx2::double_kernels();
    case Isa::AmxEmulated:
      return double_kernels(default_isa());
    default:
      return avx512::double_kernels();
  }
}

TileKernel<float, Bf16Bits> bf16_kernel(Isa isa) {
  switch (isa) {
    case Isa::Avx512Bf16:
      return avx512_bf16::bf16_kernel();
    case Isa::Amx:
      return amx::bf16_kernel();
    case Isa::AmxEmulated:
      return amx_emulated::bf16_kernel();
    default:
      return {};
  }
}

ToBf16Fn to_bf16_rows(Isa isa) {
  if (isa_supported(Isa::Avx512Bf16) && isa >= Isa::Avx512Bf16) return &avx512_bf16::to_bf16;
  return nullptr;
}

namespace {

template <typename T>
inline bool relu_mask_on(T v) {
  return static_cast<float>(v) > 0.f;
}
inline bool relu_mask_on(double v) { return v > 0.0; }

// Where element (p, r) of a packed panel of width w and padded depth kcp lives.
template <Layout L>
inline int64_t packed_index(int64_t p, int64_t r, int64_t w, int64_t kcp) {
  if constexpr (L == Layout::KMajor) return p * w + r;
  if constexpr (L == Layout::KPairs) return (((p >> 1) * w + r) << 1) + (p & 1);
  return r * kcp + p;
}

// What a kernel multiplies: Acc for the FMA kernels, bfloat16 bits for the
// bfloat16 ones (only ever packed from bfloat16 tensors).
template <typename P, typename T>
inline P packed_value(T v) {
  if constexpr (std::is_same_v<P, Bf16Bits>) {
    return v.x;
  } else {
    return static_cast<P>(v);
  }
}

// The packed layouts hold 32-bit words (a float, or a k pair of bfloat16s)
// in k-major order: word (q, r) of a panel of width w at q * w + r. From a
// source whose rows are contiguous (row r's word q at src[r * lds + q]),
// packing is a transpose: 8 x 8 blocks on the ISA's transposer where there
// is one, single words for the edges. Words are copied as bits.
using TransposeFn = void (*)(const float* src, int64_t lds, float* dst, int64_t ldd);

template <typename Acc>
TransposeFn word_transposer(const KernelSet<Acc>* fast) {
  if constexpr (std::is_same_v<Acc, float>) return fast ? fast->transpose_8x8 : nullptr;
  return nullptr;
}

inline void transpose_words(const uint32_t* src, int64_t lds, int rows, int64_t cols, uint32_t* dst, int w,
                            TransposeFn t8) {
  const int r8 = t8 ? rows - rows % 8 : 0;
  const int64_t q8 = t8 ? cols - cols % 8 : 0;
  for (int r = 0; r < r8; r += 8)
    for (int64_t q = 0; q < q8; q += 8)
      t8(reinterpret_cast<const float*>(src + r * lds + q), lds, reinterpret_cast<float*>(dst + q * w + r), w);
  for (int r = r8; r < rows; ++r)
    for (int64_t q = 0; q < q8; ++q) dst[q * w + r] = src[r * lds + q];
  for (int r = 0; r < rows; ++r)
    for (int64_t q = q8; q < cols; ++q) dst[q * w + r] = src[r * lds + q];
}

// The same for `rows` source rows of T (start `src`, row stride `rs`
// elements, each row's kc elements contiguous) into a KMajor (float) or
// KPairs (bfloat16) panel of width w; false where the words cannot be read
// as such (another layout or type, or rows not 4-byte aligned). An odd kc's
// last element of a pair panel is left to the caller.
template <Layout L, typename T, typename P>
bool pack_rows_as_words(P* dst, int w, const T* src, int64_t rs, int rows, int64_t kc, TransposeFn t8) {
  constexpr bool floats = L == Layout::KMajor && std::is_same_v<T, float> && std::is_same_v<P, float>;
  constexpr bool pairs = L == Layout::KPairs && std::is_same_v<P, Bf16Bits> && sizeof(T) == 2;
  if constexpr (floats || pairs) {
    constexpr int per_word = floats ? 1 : 2;
    if (rs % per_word || reinterpret_cast<uintptr_t>(src) % 4) return false;
    transpose_words(reinterpret_cast<const uint32_t*>(src), rs / per_word, rows, kc / per_word,
                    reinterpret_cast<uint32_t*>(dst), w, t8);
    return true;
  }
  return false;
}

// Packs one MR-row panel of A: rows [i0, i0+MR) x columns [p0, p0+kc) into
// an MR x kcp panel, zero-padded. Applies the mask and, if `row_sums` is
// given, adds each packed row's sum (in Acc) to it. The loop order follows
// A's smaller stride, so reads stay sequential either way.
template <Layout L, bool kMasked, typename T, typename Acc, typename P>
void pack_a_panel(P* dst, int MR, const MatrixView<T>& a, const MatrixView<T>& mask, int64_t i0, int64_t p0, int64_t kc,
                  int64_t kcp, Acc* row_sums, TransposeFn t8) {
  const int mr = static_cast<int>(std::min<int64_t>(MR, a.rows - i0));
  if (mr < MR || kcp > kc) std::memset(dst, 0, sizeof(P) * MR * kcp);
  // The forward's A (the input, rows contiguous): a transpose of words.
  if (!kMasked && !row_sums && a.cs == 1 && pack_rows_as_words<L>(dst, MR, a.data + i0 * a.rs + p0, a.rs, mr, kc, t8)) {
    if (kc % 2 && L == Layout::KPairs)
      for (int r = 0; r < mr; ++r) dst[packed_index<L>(kc - 1, r, MR, kcp)] = packed_value<P>(a(i0 + r, p0 + kc - 1));
    return;
  }
  // Both loads happen and a select picks the value: a branch on a ReLU
  // mask mispredicts half the time.
  auto value = [&](int64_t i, int64_t p) -> T {
    const T v = a(i, p);
    if constexpr (kMasked) return relu_mask_on(mask(i, p)) ? v : T(0);
    return v;
  };
  if (std::abs(a.rs) < std::abs(a.cs)) {
    Acc sums[32] = {};  // MR <= 32
    for (int64_t p = 0; p < kc; ++p)
      for (int r = 0; r < mr; ++r) {
        const T v = value(i0 + r, p0 + p);
        dst[packed_index<L>(p, r, MR, kcp)] = packed_value<P>(v);
        sums[r] += static_cast<Acc>(v);
      }
    if (row_sums)
      for (int r = 0; r < mr; ++r) row_sums[i0 + r] += sums[r];
  } else {
    for (int r = 0; r < mr; ++r) {
      Acc sum = Acc(0);
      for (int64_t p = 0; p < kc; ++p) {
        const T v = value(i0 + r, p0 + p);
        dst[packed_index<L>(p, r, MR, kcp)] = packed_value<P>(v);
        sum += static_cast<Acc>(v);
      }
      if (row_sums) row_sums[i0 + r] += sum;
    }
  }
}

// Packs one NR-column panel of B: rows [p0, p0+kc), columns [j0, j0+NR),
// zero-padded to NR x kcp; loop order as for A.
template <Layout L, typename T, typename Acc, typename P>
void pack_b_panel(P* dst, int NR, const MatrixView<T>& b, int64_t p0, int64_t kc, int64_t kcp, int64_t j0,
                  const KernelSet<Acc>* fast) {
  const int nr = static_cast<int>(std::min<int64_t>(NR, b.cols - j0));
  if (nr < NR || kcp > kc) std::memset(dst, 0, sizeof(P) * NR * kcp);
  if (std::abs(b.cs) <= std::abs(b.rs)) {
    for (int64_t p = 0; p < kc; ++p) {
      const T* src = b.data + (p0 + p) * b.rs + j0 * b.cs;
      for (int j = 0; j < nr; ++j) dst[packed_index<L>(p, j, NR, kcp)] = packed_value<P>(src[j * b.cs]);
    }
    return;
  }
  // A weight read as B[k, n] = W[n, k]: each panel is a transpose (of
  // words: a k pair of one column is 4 adjacent bytes).
  int64_t p_done = 0;
  const TransposeFn t8 = word_transposer(fast);
  if (b.rs == 1 && pack_rows_as_words<L>(dst, NR, b.data + p0 + j0 * b.cs, b.cs, nr, kc, t8))
    p_done = L == Layout::KPairs ? kc - kc % 2 : kc;
  for (int j = 0; j < nr; ++j) {
    const T* src = b.data + p0 * b.rs + (j0 + j) * b.cs;
    for (int64_t p = p_done; p < kc; ++p) dst[packed_index<L>(p, j, NR, kcp)] = packed_value<P>(src[p * b.rs]);
  }
}

// Scratch space kept per calling thread between calls, one slot per use
// (the packed operands; the float workspace of a half-precision product): a
// fresh multi-megabyte allocation is handed back to the system on free,
// and re-touching it costs a page fault per 4 KB on every call. Requests
// above kKeepBytes are allocated for the call alone. Not zero-filled.
enum class Scratch { Packing = 0, Workspace = 1 };

void* scratch_space(Scratch slot, size_t bytes, std::unique_ptr<char[]>& once) {
  constexpr size_t kKeepBytes = size_t(64) << 20;
  if (bytes > kKeepBytes) {
    once.reset(new char[bytes + 64]);
    return once.get();
  }
  thread_local std::unique_ptr<char[]> kept[2];
  thread_local size_t kept_size[2] = {0, 0};
  const int i = static_cast<int>(slot);
  if (kept_size[i] < bytes) {
    kept[i].reset(new char[bytes + 64]);
    kept_size[i] = bytes;
  }
  return kept[i].get();
}

template <typename T>
T* aligned64(void* p) {
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  return reinterpret_cast<T*>((u + 63) & ~uintptr_t(63));
}

// The blocking for one kernel on this machine and reduction length K.
struct Blocking {
  int64_t kc, mc_panels;
};

template <typename P>
Blocking blocking_for(int mr, int nr, int k_align, Layout a_layout, int64_t K) {
  const CacheSizes& caches = cache_sizes();
  int64_t kc_max;
  if (a_layout == Layout::RowMajor) {
    kc_max = 512;  // tile kernels read their panels from L2; a deep k block amortises the tile store
  } else {
    // A deep k block: every k block loads and stores the C tile again, and
    // both panels stream from L2 fast enough for the FMAs (per k step, one
    // B row and MR broadcasts for MR * NR multiply-adds). Measured on a
    // Zen 4: KC 128 (B panel in half of L1) ran at 0.83-0.90x oneDNN on
    // one core, a whole K of 1024 at 0.96-1.00x (benchmarks/NOTES.md).
    kc_max = caches.l2 / 8 / (nr * static_cast<int64_t>(sizeof(P)));
    kc_max = std::clamp<int64_t>(kc_max - kc_max % 16, 64, 1024);
  }
  // Equal k blocks: K = 1100 runs as two of 560, not 1024 and 76.
  const int64_t k_blocks = (K + kc_max - 1) / kc_max;
  int64_t kc = (K + k_blocks - 1) / k_blocks;
  kc = (kc + 15) / 16 * 16;
  kc = (kc + k_align - 1) / k_align * k_align;
  const int64_t panel_bytes = kc * mr * static_cast<int64_t>(sizeof(P));
  const int64_t mc_panels = std::clamp<int64_t>(caches.l2 / 4 / panel_bytes, 2, 16);
  return {kc, mc_panels};
}

// How `threads` threads split an a_panels x b_panels grid of tiles: tm row
// parts by tn column parts (tm * tn threads, at most `threads`), the one
// whose largest part has the fewest tiles; on a tie, fewer row parts (the A
// panels are then shared and each thread keeps its own B panels).
struct ThreadGrid {
  int64_t tm, tn;
};

ThreadGrid thread_grid(int64_t threads, int64_t a_panels, int64_t b_panels) {
  ThreadGrid best{1, 1};
  int64_t best_cost = a_panels * b_panels;
  for (int64_t t = std::min(threads, a_panels * b_panels); t > 1; --t) {
    for (int64_t tm = 1; tm <= t; ++tm) {
      if (t % tm || tm > a_panels || t / tm > b_panels) continue;
      const int64_t tn = t / tm;
      const int64_t cost = ((a_panels + tm - 1) / tm) * ((b_panels + tn - 1) / tn);
      if (cost < best_cost) best = {tm, tn}, best_cost = cost;
    }
    if (best.tm * best.tn == t) break;  // the most threads that split evenly enough
  }
  return best;
}

// C (cacc, Acc) = epilogue(A @ B) on a tile kernel that multiplies P, for
// M > 0, N > 0, K > 0. `store_rows(i0, i1, j0, j1)` is called once a task's
// block is final (to convert it to T while it is in cache).
template <typename T, typename Acc, typename P, Layout LA, Layout LB, typename Store>
void packed_gemm(const TileKernel<Acc, P>& kernel, const KernelSet<Acc>* fast, const MatrixView<T>& a,
                 const MatrixView<T>* mask, const MatrixView<T>& b, Acc* cacc, int64_t ldacc,
                 const Epilogue<Acc>& epilogue, Acc* row_sums, bool serial, const Store& store_rows) {
  const int64_t M = a.rows, K = a.cols, N = b.cols;
  const int MR = kernel.mr, NR = kernel.nr;
  const Blocking blk = blocking_for<P>(MR, NR, kernel.k_align, LA, K);
  const int64_t KC = blk.kc;
  const int64_t k_blocks = (K + KC - 1) / KC;
  auto kc_of = [&](int64_t kb) { return std::min<int64_t>(KC, K - kb * KC); };
  auto kcp_of = [&](int64_t kb) { return (kc_of(kb) + kernel.k_align - 1) / kernel.k_align * kernel.k_align; };
  const int64_t kcp_max = kcp_of(0);
  const int64_t a_panels = (M + MR - 1) / MR;
  const int64_t b_panels = (N + NR - 1) / NR;

  // k-block kb of A holds a_panels panels of kcp x MR, of B b_panels panels
  // of kcp x NR. An A panel is packed by one task walking the k-blocks in
  // order, so each row sum has one owner and a fixed order.
  const int64_t a_block = kcp_max * a_panels * MR, b_block = kcp_max * b_panels * NR;
  std::unique_ptr<char[]> once;
  P* const packed_a = aligned64<P>(
      scratch_space(Scratch::Packing, sizeof(P) * static_cast<size_t>(k_blocks * (a_block + b_block)) + 64, once));
  P* const packed_b = packed_a + k_blocks * a_block;
  if (row_sums) std::fill(row_sums, row_sums + M, Acc(0));
  const TransposeFn t8 = word_transposer(fast);
  auto pack_a_panel_t = [&](int64_t t) {
    for (int64_t kb = 0; kb < k_blocks; ++kb) {
      P* dst = packed_a + kb * a_block + t * kcp_of(kb) * MR;
      if (mask) {
        pack_a_panel<LA, true>(dst, MR, a, *mask, t * MR, kb * KC, kc_of(kb), kcp_of(kb), row_sums, t8);
      } else {
        pack_a_panel<LA, false>(dst, MR, a, a, t * MR, kb * KC, kc_of(kb), kcp_of(kb), row_sums, t8);
      }
    }
  };
  auto pack_b_panel_t = [&](int64_t kb, int64_t jp) {
    pack_b_panel<LB, T, Acc, P>(packed_b + kb * b_block + jp * kcp_of(kb) * NR, NR, b, kb * KC, kc_of(kb), kcp_of(kb),
                                jp * NR, fast);
  };

  // Each thread owns one rectangle of a tm x tn grid over the tiles (panel
  // counts differ by at most one: no thread waits on a larger share) and
  // walks it in row blocks of at most mc_panels A panels. An operand split
  // along the grid is packed by the thread that uses it, inside its task;
  // one shared by several threads is packed first, in parallel.
  const ThreadGrid grid = serial ? ThreadGrid{1, 1} : thread_grid(at::get_num_threads(), a_panels, b_panels);
  const bool a_shared = grid.tn > 1, b_shared = grid.tm > 1;
  if (a_shared && !b_shared && M * K <= kSerialWork) {
    for (int64_t t = 0; t < a_panels; ++t) pack_a_panel_t(t);  // small: not worth a second parallel region
  } else if (a_shared || b_shared) {
    const int64_t a_items = a_shared ? a_panels : 0, b_items = b_shared ? k_blocks * b_panels : 0;
    maybe_parallel(serial, a_items + b_items, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        if (t < a_items) {
          pack_a_panel_t(t);
        } else {
          pack_b_panel_t((t - a_items) / b_panels, (t - a_items) % b_panels);
        }
      }
    });
  }

  maybe_parallel(serial, grid.tm * grid.tn, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t gm = t / grid.tn, gn = t % grid.tn;
      const int64_t ia = gm * a_panels / grid.tm, ib = (gm + 1) * a_panels / grid.tm;
      const int64_t jp0 = gn * b_panels / grid.tn, jp1 = (gn + 1) * b_panels / grid.tn;
      if (!a_shared)
        for (int64_t ip = ia; ip < ib; ++ip) pack_a_panel_t(ip);
      if (!b_shared)
        for (int64_t kb = 0; kb < k_blocks; ++kb)
          for (int64_t jp = jp0; jp < jp1; ++jp) pack_b_panel_t(kb, jp);
      const int64_t row_blocks = (ib - ia + blk.mc_panels - 1) / blk.mc_panels;
      for (int64_t rb = 0; rb < row_blocks; ++rb) {
        const int64_t ip0 = ia + rb * (ib - ia) / row_blocks, ip1 = ia + (rb + 1) * (ib - ia) / row_blocks;
        for (int64_t kb = 0; kb < k_blocks; ++kb) {
          const int64_t kcp = kcp_of(kb);
          const bool first = kb == 0, last = kb == k_blocks - 1;
          const P* ablock = packed_a + kb * a_block;
          const P* bblock = packed_b + kb * b_block;
          for (int64_t jp = jp0; jp < jp1; ++jp) {
            const int64_t j = jp * NR;
            const int nr = static_cast<int>(std::min<int64_t>(NR, N - j));
            const Acc* bias = (last && epilogue.bias) ? epilogue.bias + j : nullptr;
            for (int64_t ip = ip0; ip < ip1; ++ip) {
              const int64_t i = ip * MR;
              const int mr = static_cast<int>(std::min<int64_t>(MR, M - i));
              kernel.fn(kcp, ablock + ip * kcp * MR, bblock + jp * kcp * NR, cacc + i * ldacc + j, ldacc, mr, nr,
                        !first, bias, last && epilogue.relu);
            }
          }
        }
        store_rows(ip0 * MR, std::min(M, ip1 * MR), jp0 * NR, std::min(N, jp1 * NR));
      }
    }
  });
}

// Picks the panel layouts the kernel asks for (each combination is a
// separate instantiation of the packing loops).
template <typename T, typename Acc, typename P, typename Store>
void run_tile_kernel(const TileKernel<Acc, P>& kernel, const KernelSet<Acc>* fast, const MatrixView<T>& a,
                     const MatrixView<T>* mask, const MatrixView<T>& b, Acc* cacc, int64_t ldacc,
                     const Epilogue<Acc>& epilogue, Acc* row_sums, bool serial, const Store& store) {
  if (kernel.a_layout == Layout::KMajor) {
    packed_gemm<T, Acc, P, Layout::KMajor, Layout::KMajor>(kernel, fast, a, mask, b, cacc, ldacc, epilogue, row_sums,
                                                           serial, store);
  } else if constexpr (std::is_same_v<P, Bf16Bits>) {
    if (kernel.a_layout == Layout::KPairs) {
      packed_gemm<T, Acc, P, Layout::KPairs, Layout::KPairs>(kernel, fast, a, mask, b, cacc, ldacc, epilogue, row_sums,
                                                             serial, store);
    } else {
      packed_gemm<T, Acc, P, Layout::RowMajor, Layout::KPairs>(kernel, fast, a, mask, b, cacc, ldacc, epilogue,
                                                               row_sums, serial, store);
    }
  }
}

template <typename Acc>
KernelSet<Acc> kernels_for(Isa isa) {
  if constexpr (std::is_same_v<Acc, double>) {
    return double_kernels(isa);
  } else {
    return float_kernels(isa);
  }
}

}  // namespace

template <typename T, typename Acc>
void masked_row_sums(const MatrixView<T>& a, const MatrixView<T>* mask, Acc* row_sums) {
  auto rows = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      Acc s = Acc(0);
      for (int64_t p = 0; p < a.cols; ++p)
        if (!mask || relu_mask_on((*mask)(i, p))) s += static_cast<Acc>(a(i, p));
      row_sums[i] = s;
    }
  };
  maybe_parallel(a.rows * a.cols <= kSerialWork, a.rows, rows);
}

template <typename T, typename Acc>
void gemm(const MatrixView<T>& a, const MatrixView<T>* mask, const MatrixView<T>& b, T* c, int64_t ldc,
          Epilogue<Acc> epilogue, Acc* row_sums) {
  const int64_t M = a.rows, K = a.cols, N = b.cols;
  if (M == 0 || N == 0) {
    // Nothing to store, but the row sums are still due.
    if (row_sums) masked_row_sums<T, Acc>(a, mask, row_sums);
    return;
  }
  const Isa isa = active_isa();
  const KernelSet<Acc> kernels = kernels_for<Acc>(isa);
  const bool serial = M * N * K <= kSerialWork || at::get_num_threads() == 1;

  // Accumulate straight into C when it has the accumulation type; otherwise
  // into a float workspace, converted block by block as tasks finish.
  constexpr bool direct = std::is_same_v<T, Acc>;
  if constexpr (direct) {
    if (M <= 4 && K > 0 && !mask && !row_sums && a.cs == 1 && b.rs == 1) {
      maybe_parallel(serial, N, [&](int64_t j0, int64_t j1) {
        kernels.small_rows_dot(a.data, a.rs, M, b.data, b.cs, K, j0, j1, c, ldc, epilogue.bias, epilogue.relu);
      });
      return;
    }
    if (M <= 4 && K > 0 && !mask && !row_sums && a.cs == 1 && b.cs == 1 && M * N * K <= kSerialWork) {
      kernels.small_rows_axpy(a.data, a.rs, M, b.data, b.rs, K, N, c, ldc, epilogue.bias, epilogue.relu);
      return;
    }
  }
  std::unique_ptr<char[]> workspace_once;
  Acc* cacc;
  int64_t ldacc;
  if constexpr (direct) {
    cacc = c, ldacc = ldc;
  } else {
    cacc = aligned64<Acc>(
        scratch_space(Scratch::Workspace, sizeof(Acc) * static_cast<size_t>(M * N) + 64, workspace_once));
    ldacc = N;
  }
  const ToBf16Fn to_bf16 = std::is_same_v<T, c10::BFloat16> ? to_bf16_rows(isa) : nullptr;
  auto store_rows = [&](int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
    if constexpr (!direct) {
      for (int64_t i = i0; i < i1; ++i) {
        const Acc* src = cacc + i * ldacc + j0;
        T* dst = c + i * ldc + j0;
        if (to_bf16) {
          to_bf16(src, reinterpret_cast<Bf16Bits*>(dst), j1 - j0);
        } else {
          for (int64_t j = 0; j < j1 - j0; ++j) dst[j] = static_cast<T>(src[j]);
        }
      }
    }
  };

  if (K == 0) {
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) {
        Acc v = epilogue.bias ? epilogue.bias[j] : Acc(0);
        if (epilogue.relu && v < Acc(0)) v = Acc(0);
        cacc[i * ldacc + j] = v;
      }
    if (row_sums) std::fill(row_sums, row_sums + M, Acc(0));
    store_rows(0, M, 0, N);
    return;
  }
  if constexpr (std::is_same_v<T, c10::BFloat16>) {
    const TileKernel<float, Bf16Bits> bf16 = bf16_kernel(isa);
    if (bf16.fn) {
      run_tile_kernel<T, Acc, Bf16Bits>(bf16, &kernels, a, mask, b, cacc, ldacc, epilogue, row_sums, serial,
                                        store_rows);
      return;
    }
  }
  run_tile_kernel<T, Acc, Acc>(kernels.tile, &kernels, a, mask, b, cacc, ldacc, epilogue, row_sums, serial, store_rows);
}

#define FASTLAYERS_CPU_GEMM(T, Acc)                                                                         \
  template void gemm<T, Acc>(const MatrixView<T>&, const MatrixView<T>*, const MatrixView<T>&, T*, int64_t, \
                             Epilogue<Acc>, Acc*);                                                          \
  template void masked_row_sums<T, Acc>(const MatrixView<T>&, const MatrixView<T>*, Acc*);
FASTLAYERS_CPU_GEMM(float, float)
FASTLAYERS_CPU_GEMM(double, double)
FASTLAYERS_CPU_GEMM(c10::Half, float)
FASTLAYERS_CPU_GEMM(c10::BFloat16, float)
#undef FASTLAYERS_CPU_GEMM

}  // namespace cpu
}  // namespace fastlayers
