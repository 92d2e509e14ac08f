// CPU kernel of fastlayers::center over the [outer, reduce, inner] layout of
// center.h. Values are shifted by each group's first element s, so a large
// common offset costs no accuracy: sums of (x - s) are taken in float (double
// for double) over fixed chunks, chunks are combined in double in a fixed
// order, and y = (x - s) - (mean - s). Results do not depend on the thread
// count. Hot loops are compiled three times (AVX-512, AVX2, portable) and
// picked at run time by cpu::active_isa().
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <type_traits>

#include "../common/cpu_features.h"
#include "../common/cpu_parallel.h"
#include "center.h"

namespace fastlayers {
namespace {

using cpu::maybe_parallel;

template <typename T>
using CenterAcc = std::conditional_t<std::is_same_v<T, double>, double, float>;

constexpr int64_t kChunk = int64_t(1) << 15;   // elements per partial sum
constexpr int64_t kSerial = int64_t(1) << 16;  // below this, one thread

#define FASTLAYERS_INLINE inline __attribute__((always_inline))

// sum over x[0..n) of (x - shift), with independent lanes a compiler can
// vectorise and a pairwise combine. 64 lanes = four 512-bit accumulators, so
// the adds' latency overlaps instead of chaining.
template <typename T, typename Acc>
FASTLAYERS_INLINE Acc shifted_sum_body(const T* __restrict__ x, int64_t n, Acc shift) {
  constexpr int L = 64;
  Acc lane[L] = {};
  int64_t i = 0;
  for (; i + L <= n; i += L)
    for (int j = 0; j < L; ++j) lane[j] += static_cast<Acc>(x[i + j]) - shift;
  Acc tail = Acc(0);
  for (; i < n; ++i) tail += static_cast<Acc>(x[i]) - shift;
  for (int w = L / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) lane[j] += lane[j + w];
  return lane[0] + tail;
}

// y = (x - shift) - offset, where offset = mean - shift is small.
template <typename T, typename Acc>
FASTLAYERS_INLINE void subtract_body(const T* __restrict__ x, T* __restrict__ y, int64_t n, Acc shift, Acc offset) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<T>((static_cast<Acc>(x[i]) - shift) - offset);
}

// Centers rows [begin, end) of `reduce` contiguous elements each, in one
// call (no per-row indirect calls for short rows).
template <typename T, typename Acc>
FASTLAYERS_INLINE void center_rows_body(const T* x, T* y, int64_t reduce, int64_t begin, int64_t end) {
  for (int64_t o = begin; o < end; ++o) {
    const T* xr = x + o * reduce;
    const Acc shift = center_shift(static_cast<Acc>(xr[0]));
    double sum = 0;
    for (int64_t c = 0; c < reduce; c += kChunk)  // same chunks as the long-group path
      sum += shifted_sum_body<T, Acc>(xr + c, std::min(kChunk, reduce - c), shift);
    subtract_body<T, Acc>(xr, y + o * reduce, reduce, shift, static_cast<Acc>(sum / reduce));
  }
}

// sums[i] += x[r, i] - shift[i] for r in [0, rows), i in [0, width).
template <typename T, typename Acc>
FASTLAYERS_INLINE void column_sums_body(const T* __restrict__ x, int64_t rows, int64_t stride, int64_t width,
                                        const Acc* __restrict__ shift, Acc* __restrict__ sums) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < width; ++i) sums[i] += static_cast<Acc>(x[r * stride + i]) - shift[i];
}

// y[r, i] = (x[r, i] - shift[i]) - offset[i].
template <typename T, typename Acc>
FASTLAYERS_INLINE void column_subtract_body(const T* __restrict__ x, T* __restrict__ y, int64_t rows, int64_t stride,
                                            int64_t width, const Acc* __restrict__ shift,
                                            const Acc* __restrict__ offset) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < width; ++i)
      y[r * stride + i] = static_cast<T>((static_cast<Acc>(x[r * stride + i]) - shift[i]) - offset[i]);
}

template <typename T, typename Acc>
struct Loops {
  Acc (*shifted_sum)(const T*, int64_t, Acc);
  void (*subtract)(const T*, T*, int64_t, Acc, Acc);
  void (*column_sums)(const T*, int64_t, int64_t, int64_t, const Acc*, Acc*);
  void (*column_subtract)(const T*, T*, int64_t, int64_t, int64_t, const Acc*, const Acc*);
  void (*rows)(const T*, T*, int64_t, int64_t, int64_t);
};

#define FASTLAYERS_CENTER_LOOPS(ATTR, NAME)                                                                            \
  template <typename T, typename Acc>                                                                                  \
  ATTR Acc NAME##_shifted_sum(const T* x, int64_t n, Acc shift) {                                                      \
    return shifted_sum_body<T, Acc>(x, n, shift);                                                                      \
  }                                                                                                                    \
  template <typename T, typename Acc>                                                                                  \
  ATTR void NAME##_subtract(const T* x, T* y, int64_t n, Acc shift, Acc offset) {                                      \
    subtract_body<T, Acc>(x, y, n, shift, offset);                                                                     \
  }                                                                                                                    \
  template <typename T, typename Acc>                                                                                  \
  ATTR void NAME##_column_sums(const T* x, int64_t rows, int64_t stride, int64_t width, const Acc* shift, Acc* sums) { \
    column_sums_body<T, Acc>(x, rows, stride, width, shift, sums);                                                     \
  }                                                                                                                    \
  template <typename T, typename Acc>                                                                                  \
  ATTR void NAME##_column_subtract(const T* x, T* y, int64_t rows, int64_t stride, int64_t width, const Acc* shift,    \
                                   const Acc* offset) {                                                                \
    column_subtract_body<T, Acc>(x, y, rows, stride, width, shift, offset);                                            \
  }                                                                                                                    \
  template <typename T, typename Acc>                                                                                  \
  ATTR void NAME##_rows(const T* x, T* y, int64_t reduce, int64_t begin, int64_t end) {                                \
    center_rows_body<T, Acc>(x, y, reduce, begin, end);                                                                \
  }

FASTLAYERS_CENTER_LOOPS(, portable)
#if defined(__x86_64__)
FASTLAYERS_CENTER_LOOPS(__attribute__((target("avx2,fma"))), avx2)
FASTLAYERS_CENTER_LOOPS(__attribute__((target("avx512f,avx512bw,avx512vl,prefer-vector-width=512"))), avx512)
#endif

template <typename T, typename Acc>
Loops<T, Acc> select_loops() {
#if defined(__x86_64__)
  const cpu::Isa isa = cpu::vector_isa();
  if (isa >= cpu::Isa::Avx512)
    return {&avx512_shifted_sum<T, Acc>, &avx512_subtract<T, Acc>, &avx512_column_sums<T, Acc>,
            &avx512_column_subtract<T, Acc>, &avx512_rows<T, Acc>};
  if (isa >= cpu::Isa::Avx2)
    return {&avx2_shifted_sum<T, Acc>, &avx2_subtract<T, Acc>, &avx2_column_sums<T, Acc>, &avx2_column_subtract<T, Acc>,
            &avx2_rows<T, Acc>};
#endif
  return {&portable_shifted_sum<T, Acc>, &portable_subtract<T, Acc>, &portable_column_sums<T, Acc>,
          &portable_column_subtract<T, Acc>, &portable_rows<T, Acc>};
}

// Groups of `reduce` contiguous elements (inner == 1).
template <typename T, typename Acc>
void center_rows(const T* x, T* y, int64_t outer, int64_t reduce, const Loops<T, Acc>& loops) {
  const bool serial = outer * reduce <= kSerial;
  if (outer > 1 || reduce <= kChunk) {
    maybe_parallel(serial, outer, [&](int64_t begin, int64_t end) { loops.rows(x, y, reduce, begin, end); });
    return;
  }
  // One long group (the whole tensor): chunks summed in parallel, combined
  // in order, then subtracted in parallel.
  const int64_t chunks = (reduce + kChunk - 1) / kChunk;
  std::vector<Acc> partial(static_cast<size_t>(chunks));
  const Acc shift = center_shift(static_cast<Acc>(x[0]));
  maybe_parallel(serial, chunks, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c)
      partial[c] = loops.shifted_sum(x + c * kChunk, std::min(kChunk, reduce - c * kChunk), shift);
  });
  double sum = 0;
  for (const Acc p : partial) sum += p;
  const Acc offset = static_cast<Acc>(sum / reduce);
  maybe_parallel(serial, chunks, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c)
      loops.subtract(x + c * kChunk, y + c * kChunk, std::min(kChunk, reduce - c * kChunk), shift, offset);
  });
}

// Groups strided by `inner` (a dim other than the last). Rows are streamed
// in fixed blocks of `rows_per_block` rows over column tiles of at most
// kChunk columns; each block's column sums (float) are added in double in
// block order, then a second pass subtracts. Shifts are each group's first
// row. The work runs in waves of at most kWaveElements partial sums, so the
// workspace stays a few MB however large the tensor (a whole-tensor partial
// array was 3x the input for [2, 2^30] along dim 0). Each column's arithmetic
// is fixed by rows_per_block alone: results do not depend on the thread count
// or on the tiling.
constexpr int64_t kWaveElements = int64_t(1) << 21;

template <typename T, typename Acc>
void center_columns(const T* x, T* y, int64_t outer, int64_t reduce, int64_t inner, const Loops<T, Acc>& loops) {
  const int64_t rows_per_block = std::max<int64_t>(1, kChunk / inner);
  const int64_t blocks = (reduce + rows_per_block - 1) / rows_per_block;
  const int64_t width = std::min(inner, kChunk);  // columns per tile
  const int64_t tiles = (inner + width - 1) / width;
  const int64_t units = outer * tiles;  // (group row, column tile) pairs
  const int64_t items = units * blocks;
  const int64_t wave = std::max<int64_t>(1, kWaveElements / width);  // items per wave
  const bool serial = outer * reduce * inner <= kSerial;

  struct Unit {
    int64_t first;  // offset of the unit's first element (row 0 of its group)
    int64_t width;
  };
  auto unit_of = [&](int64_t u) {
    const int64_t o = u / tiles, tile = u % tiles;
    return Unit{o * reduce * inner + tile * width, std::min(width, inner - tile * width)};
  };
  auto rows_of = [&](int64_t blk) { return std::min(rows_per_block, reduce - blk * rows_per_block); };
  auto shifts_of = [&](const Unit& u, Acc* shift) {
    for (int64_t i = 0; i < u.width; ++i) shift[i] = center_shift(static_cast<Acc>(x[u.first + i]));
  };

  std::vector<Acc> partial(static_cast<size_t>(std::min(items, wave) * width));
  // Running double sums of the units a wave touches, then their offsets.
  const int64_t max_units = std::min(units, wave / blocks + 2);
  std::vector<double> total(static_cast<size_t>(max_units * width));
  std::vector<Acc> offset(static_cast<size_t>(max_units * width));

  for (int64_t begin = 0; begin < items; begin += wave) {
    const int64_t end = std::min(items, begin + wave);
    maybe_parallel(serial, end - begin, [&](int64_t lo, int64_t hi) {
      std::vector<Acc> shift(static_cast<size_t>(width));
      for (int64_t t = begin + lo; t < begin + hi; ++t) {
        const Unit u = unit_of(t / blocks);
        const int64_t blk = t % blocks;
        shifts_of(u, shift.data());
        Acc* sums = partial.data() + (t - begin) * width;
        std::fill(sums, sums + u.width, Acc(0));
        loops.column_sums(x + u.first + blk * rows_per_block * inner, rows_of(blk), inner, u.width, shift.data(), sums);
      }
    });
    // Combine in block order. Unit slots count from the wave's first unit,
    // whose running sum may carry over from the previous wave (slot 0).
    const int64_t first_unit = begin / blocks;
    int64_t done_first = -1, done_last = -1;  // units finished in this wave
    for (int64_t t = begin; t < end; ++t) {
      const int64_t unit = t / blocks, blk = t % blocks;
      const Unit u = unit_of(unit);
      double* tot = total.data() + (unit - first_unit) * width;
      const Acc* sums = partial.data() + (t - begin) * width;
      if (blk == 0) std::fill(tot, tot + u.width, 0.0);
      for (int64_t i = 0; i < u.width; ++i) tot[i] += sums[i];
      if (blk == blocks - 1) {
        Acc* off = offset.data() + (unit - first_unit) * width;
        for (int64_t i = 0; i < u.width; ++i) off[i] = static_cast<Acc>(tot[i] / reduce);
        if (done_first < 0) done_first = unit;
        done_last = unit;
      }
    }
    // A unit left unfinished carries its running sum to the next wave's slot 0.
    const int64_t last_unit = (end - 1) / blocks;
    if ((end - 1) % blocks != blocks - 1 && last_unit != first_unit) {
      std::copy_n(total.begin() + (last_unit - first_unit) * width, width, total.begin());
    }
    if (done_first < 0) continue;
    // Subtract every block of the units finished here (some blocks were
    // summed in earlier waves).
    const int64_t sub_items = (done_last - done_first + 1) * blocks;
    maybe_parallel(serial, sub_items, [&](int64_t lo, int64_t hi) {
      std::vector<Acc> shift(static_cast<size_t>(width));
      for (int64_t t = lo; t < hi; ++t) {
        const int64_t unit = done_first + t / blocks, blk = t % blocks;
        const Unit u = unit_of(unit);
        shifts_of(u, shift.data());
        const int64_t first = u.first + blk * rows_per_block * inner;
        loops.column_subtract(x + first, y + first, rows_of(blk), inner, u.width, shift.data(),
                              offset.data() + (unit - first_unit) * width);
      }
    });
  }
}

at::Tensor center_cpu(const at::Tensor& input, at::OptionalIntArrayRef dim) {
  const std::vector<int64_t> dims = center_dims(input, dim);
  const CenterLayout l = center_layout(input, dims);
  at::Tensor out = at::empty(l.x.sizes(), l.x.options());
  if (out.numel() == 0) return center_result(out, l);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "center_cpu", [&] {
    using Acc = CenterAcc<scalar_t>;
    const Loops<scalar_t, Acc> loops = select_loops<scalar_t, Acc>();
    const scalar_t* x = l.x.const_data_ptr<scalar_t>();
    scalar_t* y = out.data_ptr<scalar_t>();
    if (l.inner == 1) {
      center_rows<scalar_t, Acc>(x, y, l.outer, l.reduce, loops);
    } else {
      center_columns<scalar_t, Acc>(x, y, l.outer, l.reduce, l.inner, loops);
    }
  });
  return center_result(out, l);
}

}  // namespace

TORCH_LIBRARY_IMPL(fastlayers, CPU, m) { m.impl("center", &center_cpu); }

}  // namespace fastlayers
