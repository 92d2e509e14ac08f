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
