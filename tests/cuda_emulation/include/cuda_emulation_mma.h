// CUDA emulation (see ../emulator.h) of csrc/common/cuda_mma.cuh: ldmatrix
// (plain and .trans) and mma.sync m16n8k16 as warp collectives, written from the PTX ISA's
// fragment layouts (the comment at the top of cuda_mma.cuh). Products are
// exact and summed in double, then rounded to float: the hardware's own
// summation order is unspecified, so results may differ in the last bits.
//
// cp.async copies land when a cp_async_wait lets them (as late as the
// hardware may deliver them), so a missing wait or barrier shows as stale
// data; with FASTLAYERS_EMULATION_CP_ASYNC=early they land at once instead
// (as early as it may), so a copy into a buffer still being read shows too.
#pragma once

#include <cstdlib>
#include <deque>
#include <vector>

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>

namespace fastlayers {
namespace cuda {

inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) {
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0)
    throw std::runtime_error("CUDA emulation: ldmatrix row address not 16-byte aligned");
  const unsigned lane = emu::lane_id();
  const unsigned char* lane0 = emu::publish(&row, sizeof(row));
  for (int i = 0; i < 4; ++i) {
    const void* src;  // row lane/4 of matrix i, given by lane 8i + lane/4
    std::memcpy(&src, lane0 + size_t(8 * i + lane / 4) * emu::Block::kSlotBytes, sizeof(src));
    std::memcpy(&r[i], static_cast<const unsigned char*>(src) + 4 * (lane % 4), 4);
  }
  emu::warp_barrier();
}

inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) {
  if (reinterpret_cast<uintptr_t>(row) % 16 != 0)
    throw std::runtime_error("CUDA emulation: ldmatrix row address not 16-byte aligned");
  if (emu::lane_id() == 0) ++emu::counters().ldmatrix_trans;
  const unsigned lane = emu::lane_id();
  const unsigned char* lane0 = emu::publish(&row, sizeof(row));
  auto row_of = [&](int matrix, int r) {  // row r of matrix i, given by lane 8i + r
    const unsigned char* src;
    std::memcpy(&src, lane0 + size_t(8 * matrix + r) * emu::Block::kSlotBytes, sizeof(src));
    return src;
  };
  for (int i = 0; i < 4; ++i) {
    // elements (2(lane%4), lane/4) low and (2(lane%4)+1, lane/4) high
    uint16_t lo, hi;
    std::memcpy(&lo, row_of(i, 2 * (lane % 4)) + 2 * (lane / 4), 2);
    std::memcpy(&hi, row_of(i, 2 * (lane % 4) + 1) + 2 * (lane / 4), 2);
    r[i] = uint32_t(lo) | (uint32_t(hi) << 16);
  }
  emu::warp_barrier();
}

template <typename T>
float emulated_element(uint32_t reg, int half) {
  const uint16_t bits = static_cast<uint16_t>(reg >> (16 * half));
  if constexpr (std::is_same_v<T, c10::Half>) {
    return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
  } else {
    return static_cast<float>(c10::BFloat16(bits, c10::BFloat16::from_bits()));
  }
}

template <typename T>
void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  static_assert(std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>);
  if (emu::lane_id() == 0) ++emu::counters().mma;
  struct Fragments {
    uint32_t a[4], b[2];
  } mine{{a[0], a[1], a[2], a[3]}, {b[0], b[1]}};
  const unsigned lane = emu::lane_id();
  const unsigned char* lane0 = emu::publish(&mine, sizeof(mine));
  auto frags = [&](int l) {
    Fragments f;
    std::memcpy(&f, lane0 + size_t(l) * emu::Block::kSlotBytes, sizeof(f));
    return f;
  };
  auto A = [&](int row, int k) {  // a: r[l] = row lane/4 + 8(l%2), cols 2(lane%4) + 8(l/2)
    const Fragments f = frags((row % 8) * 4 + (k % 8) / 2);
    return emulated_element<T>(f.a[(row / 8) + 2 * (k / 8)], k % 2);
  };
  auto B = [&](int k, int col) {  // b: r[l] = rows 2(lane%4) + 8l, column lane/4
    const Fragments f = frags(col * 4 + (k % 8) / 2);
    return emulated_element<T>(f.b[k / 8], k % 2);
  };
  float out[4];
  for (int e = 0; e < 4; ++e) {  // d[e] = row lane/4 + 8(e/2), column 2(lane%4) + e%2
    const int row = int(lane / 4) + 8 * (e / 2), col = 2 * int(lane % 4) + e % 2;
    double s = d[e];
    for (int k = 0; k < 16; ++k) s += double(A(row, k)) * double(B(k, col));
    out[e] = static_cast<float>(s);
  }
  emu::warp_barrier();
  for (int e = 0; e < 4; ++e) d[e] = out[e];
}

struct PendingCopy {
  void* dst;
  const void* src;
  int bytes;
};

struct ThreadCopies {
  uint64_t block = 0;
  std::vector<PendingCopy> open;
  std::deque<std::vector<PendingCopy>> committed;
};

inline ThreadCopies& thread_copies() {
  static thread_local std::vector<ThreadCopies> all;
  const unsigned t = emu::block().thread();
  if (all.size() <= t) all.resize(t + 1);
  ThreadCopies& mine = all[t];
  if (mine.block != emu::block_serial) {
    if (!mine.open.empty() || !mine.committed.empty())
      throw std::runtime_error("CUDA emulation: a thread ended with cp.async copies never waited for");
    mine.block = emu::block_serial;
  }
  return mine;
}

inline void land(const PendingCopy& c) {
  std::memcpy(c.dst, c.src, c.bytes);
  std::memset(static_cast<unsigned char*>(c.dst) + c.bytes, 0, 16 - c.bytes);
}

inline void cp_async_16(void* dst, const void* src, int bytes) {
  if (reinterpret_cast<uintptr_t>(dst) % 16 || reinterpret_cast<uintptr_t>(src) % 16 || bytes < 0 || bytes > 16)
    throw std::runtime_error("CUDA emulation: cp.async needs 16-byte aligned addresses and 0..16 bytes");
  const char* when = std::getenv("FASTLAYERS_EMULATION_CP_ASYNC");
  if (when && std::string(when) == "early") {
    land({dst, src, bytes});
  } else {
    thread_copies().open.push_back({dst, src, bytes});
  }
}

inline void cp_async_commit() {
  ThreadCopies& mine = thread_copies();
  mine.committed.push_back(std::move(mine.open));
  mine.open.clear();
}

template <int N>
void cp_async_wait() {
  ThreadCopies& mine = thread_copies();
  while (mine.committed.size() > static_cast<size_t>(N)) {
    for (const PendingCopy& c : mine.committed.front()) land(c);
    mine.committed.pop_front();
  }
}

}  // namespace cuda
}  // namespace fastlayers

// ------------------------------------------------------------ sm_90a wgmma
// wgmma.mma_async m64nNk16 with both operands in shared memory, each K-major
// or M/N-major (the transpose bits), described by matrix descriptors (decoded here from the bits the device
// sees: start address, leading and stride byte offsets, base offset,
// swizzle mode), float accumulators in the PTX ISA's fragment layout. As on
// the hardware, an instruction only starts the product: it is computed when
// a wgmma_wait lets it complete, reading shared memory and the accumulators
// then, so a stage overwritten or an accumulator touched before the wait
// shows as a wrong result. A wgmma without a wgmma_fence since the thread's
// last wait (or its start) is refused. Each warp's lanes must issue it
// together (a warp collective); that all four warps of the warpgroup do is
// not checked.
namespace fastlayers {
namespace cuda {

inline uint32_t shared_address(const void* p) { return emu::shared_address(p); }

// Orders this thread's earlier generic-proxy writes to shared memory (plain
// stores, cp.async) before later async-proxy reads (wgmma). The emulator's
// memory has one proxy: nothing to do.
inline void fence_proxy_async_shared() {}

struct PendingWgmma {
  float* d;
  int n;  // N of m64nNk16: d has n / 2 elements
  uint64_t a, b;
  bool accumulate, bfloat16, a_mn_major, b_mn_major;
};

struct ThreadWgmma {
  uint64_t block = 0;
  bool fenced = false;
  std::vector<PendingWgmma> open;
  std::deque<std::vector<PendingWgmma>> committed;
};

inline ThreadWgmma& thread_wgmma() {
  static thread_local std::vector<ThreadWgmma> all;
  const unsigned t = emu::block().thread();
  if (all.size() <= t) all.resize(t + 1);
  ThreadWgmma& mine = all[t];
  if (mine.block != emu::block_serial) {
    if (!mine.open.empty() || !mine.committed.empty())
      throw std::runtime_error("CUDA emulation: a thread ended with wgmma operations never waited for");
    mine = ThreadWgmma{};
    mine.block = emu::block_serial;
  }
  return mine;
}

// The element (row, k) of an operand (row: m for A, n for B) that a
// descriptor describes, `bytes` bytes per element, stored K-major or M/N-major
// in the PTX ISA's canonical layouts.
inline const unsigned char* wgmma_element(uint64_t desc, int row, int k, int bytes, bool mn_major) {
  const uint64_t start = (desc & 0x3fff) << 4, lbo = ((desc >> 16) & 0x3fff) << 4, sbo = ((desc >> 32) & 0x3fff) << 4;
  const uint64_t base_offset = (desc >> 49) & 7, swizzle = desc >> 62;
  if (base_offset != 0)
    throw std::runtime_error("CUDA emulation: wgmma descriptors with a base offset are not emulated");
  const uint64_t kb = uint64_t(k) * bytes;  // byte offset along k
  uint64_t address;
  if (mn_major) {
    const uint64_t rb = uint64_t(row) * bytes;  // byte offset along m/n
    if (swizzle == 0) {  // 16-byte core-matrix rows of m/n, one per k: SBO between them along m/n, LBO along k
      address = start + (rb / 16) * sbo + rb % 16 + (k % 8) * 16 + (k / 8) * lbo;
    } else if (swizzle == 1) {  // 128-byte rows of m/n, one per k; 8-row atoms SBO apart along k, LBO along m/n
      address = start + (rb / 128) * lbo + (k / 8) * sbo + (k % 8) * 128 + rb % 128;
      address ^= ((address >> 7) & 7) << 4;
    } else {
      throw std::runtime_error("CUDA emulation: wgmma's 32- and 64-byte swizzles are not emulated");
    }
  } else if (swizzle == 0) {  // 8x16-byte core matrices: rows 16 bytes apart, LBO along k, SBO along m/n
    address = start + (row / 8) * sbo + (row % 8) * 16 + (kb / 16) * lbo + kb % 16;
  } else if (swizzle == 1) {  // 128-byte rows, 8-row atoms SBO apart, 16-byte chunks XOR the row within the atom
    address = start + (row / 8) * sbo + (row % 8) * 128 + kb;
    address ^= ((address >> 7) & 7) << 4;
  } else {
    throw std::runtime_error("CUDA emulation: wgmma's 32- and 64-byte swizzles are not emulated");
  }
  if (address % bytes) throw std::runtime_error("CUDA emulation: misaligned wgmma operand element");
  return emu::shared_pointer(address, bytes);
}

// setmaxnreg moves registers between warpgroups: nothing to emulate.
template <int kCount>
void warpgroup_release_registers() {}
template <int kCount>
void warpgroup_claim_registers() {}

inline void wgmma_fence() {
  thread_wgmma().fenced = true;
  emu::warp_barrier();
}

template <typename T, int N, bool kAMnMajor = false, bool kBMnMajor = false>
void wgmma_m64nNk16(float (&d)[N / 2], uint64_t a, uint64_t b, bool accumulate) {
  static_assert(std::is_same_v<T, c10::Half> || std::is_same_v<T, c10::BFloat16>);
  static_assert(N % 8 == 0 && N >= 8 && N <= 256);
  if (emu::block().threads() % 128 != 0)
    throw std::runtime_error("CUDA emulation: wgmma in a block that is not whole warpgroups");
  ThreadWgmma& mine = thread_wgmma();
  if (!mine.fenced) throw std::runtime_error("CUDA emulation: wgmma without a wgmma.fence since the last wait");
  if (emu::block().thread() % 128 == 0) ++emu::counters().wgmma;
  mine.open.push_back({d, N, a, b, accumulate, std::is_same_v<T, c10::BFloat16>, kAMnMajor, kBMnMajor});
  emu::warp_barrier();
}

inline void wgmma_commit() {
  ThreadWgmma& mine = thread_wgmma();
  mine.committed.push_back(std::move(mine.open));
  mine.open.clear();
  emu::warp_barrier();
}

// This thread's share of one wgmma: its accumulators, per the fragment
// layout d[j]: row 16 (warp % 4) + lane / 4 + 8 ((j % 4) / 2), column
// 8 (j / 4) + 2 (lane % 4) + j % 2.
inline void complete(const PendingWgmma& op) {
  const unsigned t = emu::block().thread(), warp = (t / 32) % 4, lane = t % 32;
  auto element = [&](uint64_t desc, int row, int k, bool mn_major) {
    uint16_t bits;
    std::memcpy(&bits, wgmma_element(desc, row, k, 2, mn_major), 2);
    return op.bfloat16 ? double(static_cast<float>(c10::BFloat16(bits, c10::BFloat16::from_bits())))
                       : double(static_cast<float>(c10::Half(bits, c10::Half::from_bits())));
  };
  std::vector<double> a_rows(2 * 16), b_cols(size_t(op.n) * 16);
  for (int r = 0; r < 2; ++r)
    for (int k = 0; k < 16; ++k) a_rows[r * 16 + k] = element(op.a, 16 * warp + lane / 4 + 8 * r, k, op.a_mn_major);
  for (int c = 0; c < op.n; ++c)
    for (int k = 0; k < 16; ++k) b_cols[size_t(c) * 16 + k] = element(op.b, c, k, op.b_mn_major);
  for (int j = 0; j < op.n / 2; ++j) {
    const int r = (j % 4) / 2, col = 8 * (j / 4) + 2 * int(lane % 4) + j % 2;
    double s = op.accumulate ? op.d[j] : 0.0;
    for (int k = 0; k < 16; ++k) s += a_rows[r * 16 + k] * b_cols[size_t(col) * 16 + k];
    op.d[j] = static_cast<float>(s);
  }
}

template <int N>
void wgmma_wait() {
  ThreadWgmma& mine = thread_wgmma();
  while (mine.committed.size() > static_cast<size_t>(N)) {
    for (const PendingWgmma& op : mine.committed.front()) complete(op);
    mine.committed.pop_front();
  }
  mine.fenced = false;
  emu::warp_barrier();
}

}  // namespace cuda
}  // namespace fastlayers

// ------------------------------------------------- sm_90 mbarriers and TMA
// mbarriers (emulator.h's MBarrier: arrivals and transaction bytes per
// phase, a waiting thread blocked until the phase it waits on completes, a
// phase that can never complete reported as a deadlock) and the TMA's
// two-dimensional tiled loads, from a tensor map of the emulator's own
// layout (the device's is opaque), with the 128-byte swizzle applied to the
// shared addresses written and zeros outside the tensor. A load lands when
// no thread of the block can run without it, as late as the hardware may,
// or with FASTLAYERS_EMULATION_CP_ASYNC=early at once, as early as it may.
struct CUtensorMap {
  const unsigned char* base = nullptr;
  uint64_t inner = 0, outer = 0, outer_stride_bytes = 0;  // elements, rows, bytes between rows
  uint32_t box_inner = 0, box_outer = 0, element_bytes = 0;
};
#define __grid_constant__

namespace fastlayers {
namespace cuda {

inline void encode_tma_2d(CUtensorMap* map, const void* base, int element_bytes, uint64_t inner, uint64_t outer,
                          uint64_t outer_stride_bytes, uint32_t box_inner, uint32_t box_outer) {
  // the driver's checks that matter to the kernels (cuTensorMapEncodeTiled returns an error)
  if (reinterpret_cast<uintptr_t>(base) % 16 || outer_stride_bytes % 16 || box_inner * element_bytes != 128 ||
      box_outer == 0 || box_outer > 256 || inner == 0 || outer == 0 || inner >= (uint64_t(1) << 32) ||
      outer >= (uint64_t(1) << 32) || outer_stride_bytes >= (uint64_t(1) << 40))
    throw std::runtime_error("CUDA emulation: a tensor map the driver would refuse");
  *map = CUtensorMap{static_cast<const unsigned char*>(base), inner, outer, outer_stride_bytes, box_inner, box_outer,
                     static_cast<uint32_t>(element_bytes)};
}

inline void mbarrier_init(uint64_t* bar, unsigned count) {
  emu::MBarrier& b = emu::mbarriers()[shared_address(bar)];
  b = emu::MBarrier{};
  b.count = b.pending = count;
}
inline void fence_mbarrier_init() {}

inline void mbarrier_arrive(uint64_t* bar) {
  emu::MBarrier& b = emu::mbarrier_at(shared_address(bar));
  if (b.pending == 0) throw std::runtime_error("CUDA emulation: more arrivals on an mbarrier than its phase expects");
  --b.pending;
  b.complete_if_done();
}

inline void mbarrier_arrive_expect_tx(uint64_t* bar, unsigned bytes) {
  emu::mbarrier_at(shared_address(bar)).tx += bytes;
  mbarrier_arrive(bar);
}

inline void mbarrier_wait(uint64_t* bar, unsigned parity) {
  const uint32_t address = shared_address(bar);
  if (emu::mbarrier_at(address).phase == (parity & 1)) emu::block().wait_mbarrier(address, parity & 1);
}

// Starts the load of the box at (inner c0, outer c1) into `dst` (1024-byte
// aligned shared memory), completing its bytes on `bar`.
inline void tma_load_2d(void* dst, const CUtensorMap* map, int c0, int c1, uint64_t* bar) {
  const uint32_t to = shared_address(dst), bar_address = shared_address(bar);
  if (to % 1024) throw std::runtime_error("CUDA emulation: a 128-byte-swizzled TMA destination not 1024-byte aligned");
  const CUtensorMap m = *map;  // the load reads the map when issued
  auto land_copy = [m, to, c0, c1, bar_address] {
    const uint32_t row_bytes = m.box_inner * m.element_bytes;
    for (uint32_t r = 0; r < m.box_outer; ++r)
      for (uint32_t e = 0; e < m.box_inner; ++e) {
        const int64_t x = int64_t(c0) + e, y = int64_t(c1) + r;
        uint32_t address = to + r * row_bytes + e * m.element_bytes;
        address ^= ((address >> 7) & 7) << 4;
        unsigned char* out = emu::shared_pointer(address, m.element_bytes);
        if (x >= 0 && y >= 0 && uint64_t(x) < m.inner && uint64_t(y) < m.outer) {
          std::memcpy(out, m.base + y * m.outer_stride_bytes + x * m.element_bytes, m.element_bytes);
        } else {
          std::memset(out, 0, m.element_bytes);
        }
      }
    emu::MBarrier& b = emu::mbarrier_at(bar_address);
    b.tx -= int64_t(m.box_inner) * m.box_outer * m.element_bytes;
    b.complete_if_done();
  };
  const char* when = std::getenv("FASTLAYERS_EMULATION_CP_ASYNC");  // as for cp.async: "early" lands it at once
  if (when && std::string(when) == "early") {
    land_copy();
  } else {
    emu::mbarrier_at(bar_address).landing.push_back(land_copy);
  }
}

}  // namespace cuda
}  // namespace fastlayers
