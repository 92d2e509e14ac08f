// Runs fastlayers' CUDA kernels on the CPU, for tests on machines without a
// GPU (CI, most development machines). Force-included (g++ -include) into
// the csrc/ .cu sources, which build.py compiles as C++ after rewriting
// each `kernel<<<grid, block, shared, stream>>>(args)` into
// `::emu::launch(...)`.
//
// The model: the blocks of a launch run one after another; the threads of a
// block run as cooperative fibers on one OS thread, switching only at
// __syncthreads(), at warp collectives (shuffles, ldmatrix, mma, wgmma) and
// at mbarrier waits whose phase has not completed, always
// to the first runnable thread (so warps drift as far apart as the barriers
// allow, which exposes missing barriers between warps). The
// emulator is stricter than the hardware where the hardware's behaviour is
// undefined: a __syncthreads() that not every thread of the block reaches, or
// a full-mask warp collective with a lane missing, raises an error instead of
// hanging or reading stale values; launch configurations the hardware
// rejects (block size, grid size, dynamic shared memory) raise too.
//
// What it cannot show: timing, the memory model (a missing __syncthreads()
// between shared-memory writes and reads may go unnoticed unless it
// deadlocks), register limits, or how inline PTX is assembled: the warp-level
// matrix instructions come from include/cuda_emulation_mma.h, written from
// the PTX ISA's fragment layouts.
//
// The device's compute capability and SM count are a parameter
// (include/ATen/cuda/CUDAContext.h), so that the kernels' architecture and
// SM-count branches run under more than one GPU.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#define FASTLAYERS_CUDA_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Blocks run one at a time, so a function-local static is exactly one copy
// per block, shared by its threads. All of them live in one section, which
// each block start fills with 0xff bytes (NaN as floats): shared memory read
// before it is written shows.
#define __shared__ static __attribute__((section("fastlayers_emu_shared")))
extern "C" {
extern unsigned char __start_fastlayers_emu_shared[] __attribute__((weak));
extern unsigned char __stop_fastlayers_emu_shared[] __attribute__((weak));
}

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint3 {
  unsigned x, y, z;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(16) uint4 {
  unsigned x, y, z, w;
};
struct emu_stream;
using cudaStream_t = emu_stream*;

// The built-in index variables of the thread now running.
inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

using std::max;
using std::min;

namespace emu {

constexpr size_t kDefaultSharedBytes = 48 * 1024;  // without cudaFuncSetAttribute
constexpr size_t kStackBytes = 256 * 1024;

inline thread_local uint64_t block_serial = 0;  // which block of which launch is running

// An mbarrier in shared memory (keyed by its shared address): the arrivals
// a phase expects, those still missing, the transaction bytes still due,
// the current phase's parity, and the asynchronous copies that will
// complete bytes on it when they land (the emulator lands them when no
// thread of the block can run without them: as late as the hardware may).
struct MBarrier {
  int64_t count = 0, pending = 0, tx = 0;
  unsigned phase = 0;
  std::vector<std::function<void()>> landing;
  void complete_if_done() {
    if (pending == 0 && tx == 0) {
      phase ^= 1;
      pending = count;
    }
  }
};
inline std::map<uint32_t, MBarrier>& mbarriers() {  // this block's
  static thread_local std::map<uint32_t, MBarrier> all;
  static thread_local uint64_t serial = 0;
  if (serial != block_serial) {
    all.clear();
    serial = block_serial;
  }
  return all;
}
inline MBarrier& mbarrier_at(uint32_t address) {
  auto it = mbarriers().find(address);
  if (it == mbarriers().end())
    throw std::runtime_error("CUDA emulation: an mbarrier used before mbarrier.init (shared address " +
                             std::to_string(address) + ")");
  return it->second;
}

class Block {
 public:
  enum class State { Ready, AtBlockBarrier, AtWarpBarrier, AtMbarrier, Done };

  // Runs `body` once per thread of the block (blockIdx already set).
  void run(const std::function<void()>& body, unsigned threads) {
    body_ = &body;
    threads_ = threads;
    state_.assign(threads, State::Ready);
    contexts_.resize(threads);
    while (stacks_.size() < threads) stacks_.emplace_back(new char[kStackBytes]);
    error_ = nullptr;
    for (unsigned t = 0; t < threads; ++t) {
      getcontext(&contexts_[t]);
      contexts_[t].uc_stack.ss_sp = stacks_[t].get();
      contexts_[t].uc_stack.ss_size = kStackBytes;
      contexts_[t].uc_link = &scheduler_;
      makecontext(&contexts_[t], &Block::entry, 0);
    }
    // Always the first ready thread in the scheduling order: each warp runs
    // as far as it can before the next one starts, the most skewed
    // interleaving a barrier-correct kernel must tolerate. Orders: lowest
    // thread first, or highest first with FASTLAYERS_EMULATION_ORDER=reverse.
    const char* order = std::getenv("FASTLAYERS_EMULATION_ORDER");
    const bool reverse = order && std::string(order) == "reverse";
    for (;;) {
      release_barriers();  // at once, so the warp that just arrived runs on
      unsigned t = threads;
      for (unsigned n = 0; n < threads; ++n) {
        const unsigned candidate = reverse ? threads - 1 - n : n;
        if (state_[candidate] == State::Ready) {
          t = candidate;
          break;
        }
      }
      if (t < threads) {
        current_thread_ = t;
        threadIdx = uint3{t % blockDim.x, (t / blockDim.x) % blockDim.y, t / (blockDim.x * blockDim.y)};
        swapcontext(&scheduler_, &contexts_[t]);
        if (error_) std::rethrow_exception(error_);
        continue;
      }
      if (std::all_of(state_.begin(), state_.end(), [](State s) { return s == State::Done; })) return;
      if (land_async_copies()) continue;  // nothing can run without them: they land now, as late as they may
      throw std::runtime_error(describe_deadlock());
    }
  }

  unsigned thread() const { return current_thread_; }
  unsigned threads() const { return threads_; }

  // Suspends the running thread until the barrier of `kind` releases it.
  void wait(State kind) {
    state_[current_thread_] = kind;
    swapcontext(&contexts_[current_thread_], &scheduler_);
  }

  // Suspends the running thread until the mbarrier at `address` has left
  // the phase of parity `parity`.
  void wait_mbarrier(uint32_t address, unsigned parity) {
    if (waits_.size() < threads_) waits_.resize(threads_);
    waits_[current_thread_] = {address, parity};
    wait(State::AtMbarrier);
  }

  // Per-thread slots for warp collectives.
  unsigned char* slot(unsigned t) { return exchange_.data() + size_t(t) * kSlotBytes; }
  void ensure_slots() {
    if (exchange_.size() < size_t(threads_) * kSlotBytes) exchange_.resize(size_t(threads_) * kSlotBytes);
  }
  static constexpr size_t kSlotBytes = 64;

 private:
  static void entry();

  // Lands the asynchronous copies in flight on this block's mbarriers;
  // whether there were any.
  static bool land_async_copies() {
    bool any = false;
    for (auto& [address, bar] : mbarriers()) {
      std::vector<std::function<void()>> landing;
      landing.swap(bar.landing);
      for (auto& land_copy : landing) land_copy(), any = true;
    }
    return any;
  }

  // Releases whichever barriers every thread they concern has reached.
  void release_barriers() {
    for (unsigned t = 0; t < threads_; ++t)
      if (state_[t] == State::AtMbarrier && mbarrier_at(waits_[t].first).phase != waits_[t].second)
        state_[t] = State::Ready;
    for (unsigned w = 0; w * 32 < threads_; ++w) {
      const unsigned lo = w * 32, hi = std::min(threads_, lo + 32);
      bool any = false, all = true, exited = false;
      for (unsigned t = lo; t < hi; ++t) {
        any |= state_[t] == State::AtWarpBarrier;
        all &= state_[t] == State::AtWarpBarrier;
        exited |= state_[t] == State::Done;
      }
      if (any && exited)
        throw std::runtime_error("CUDA emulation: a full-mask warp collective in warp " + std::to_string(w) +
                                 " of block " + block_name() + " after some of its lanes exited");
      if (all) {
        for (unsigned t = lo; t < hi; ++t) state_[t] = State::Ready;
      }
    }
    bool all_at_barrier = true, any_at_barrier = false, any_done = false;
    for (State s : state_) {
      any_at_barrier |= s == State::AtBlockBarrier;
      any_done |= s == State::Done;
      all_at_barrier &= s == State::AtBlockBarrier || s == State::Done;
    }
    if (any_at_barrier && all_at_barrier) {
      if (any_done)
        throw std::runtime_error("CUDA emulation: __syncthreads() in block " + block_name() +
                                 " after some of its threads exited");
      for (State& s : state_) s = State::Ready;
    }
  }

  std::string describe_deadlock() const {
    size_t at_block = 0, at_warp = 0, at_mbarrier = 0;
    for (State s : state_)
      at_block += s == State::AtBlockBarrier, at_warp += s == State::AtWarpBarrier,
          at_mbarrier += s == State::AtMbarrier;
    return "CUDA emulation: block " + block_name() + " cannot make progress: " + std::to_string(at_block) +
           " threads wait at __syncthreads(), " + std::to_string(at_warp) +
           " at a warp collective whose warp is split between the two, " + std::to_string(at_mbarrier) +
           " on an mbarrier phase that cannot complete";
  }

  static std::string block_name() {
    return "(" + std::to_string(blockIdx.x) + ", " + std::to_string(blockIdx.y) + ", " + std::to_string(blockIdx.z) +
           ")";
  }

  const std::function<void()>* body_ = nullptr;
  unsigned threads_ = 0;
  unsigned current_thread_ = 0;
  std::vector<State> state_;
  std::vector<ucontext_t> contexts_;
  std::vector<std::unique_ptr<char[]>> stacks_;
  std::vector<unsigned char> exchange_;
  std::vector<std::pair<uint32_t, unsigned>> waits_;  // a thread's mbarrier wait: (address, parity)
  ucontext_t scheduler_;
  std::exception_ptr error_;

  friend Block& block();
};

inline Block& block() {
  static thread_local Block b;
  return b;
}

inline void Block::entry() {
  Block& b = block();
  try {
    (*b.body_)();
  } catch (...) {
    b.error_ = std::current_exception();
  }
  b.state_[b.current_thread_] = State::Done;
  // uc_link returns to the scheduler.
}

// The launch's dynamic shared memory, 1024-byte aligned (the alignment of
// a swizzled wgmma tile; the hardware guarantees less, so kernels that need
// it align themselves, and the emulator keeps their arithmetic exact).
constexpr size_t kSharedAlign = 1024;
inline thread_local std::vector<unsigned char> dynamic_shared_storage;
inline thread_local size_t dynamic_shared_bytes = 0;
inline unsigned char* dynamic_shared() {
  const uintptr_t p = reinterpret_cast<uintptr_t>(dynamic_shared_storage.data());
  return dynamic_shared_storage.data() + ((kSharedAlign - p % kSharedAlign) % kSharedAlign);
}
inline void reset_dynamic_shared(size_t bytes) {
  dynamic_shared_bytes = bytes;
  dynamic_shared_storage.assign(bytes + kSharedAlign, 0xff);  // garbage-like: NaN patterns for floats
}

// The shared-memory address space as PTX sees it (__cvta_generic_to_shared:
// a 32-bit offset): the static __shared__ variables from 0, the dynamic
// shared memory after them at a 1024-byte boundary. shared_pointer() maps
// an address back, and refuses one outside both.
inline size_t static_shared_bytes() {
  if (__start_fastlayers_emu_shared == nullptr) return 0;
  const size_t n = __stop_fastlayers_emu_shared - __start_fastlayers_emu_shared;
  return (n + kSharedAlign - 1) / kSharedAlign * kSharedAlign;
}
inline uint32_t shared_address(const void* p) {
  const unsigned char* c = static_cast<const unsigned char*>(p);
  if (__start_fastlayers_emu_shared != nullptr && c >= __start_fastlayers_emu_shared &&
      c < __stop_fastlayers_emu_shared)
    return static_cast<uint32_t>(c - __start_fastlayers_emu_shared);
  if (c >= dynamic_shared() && c < dynamic_shared() + dynamic_shared_bytes)
    return static_cast<uint32_t>(static_shared_bytes() + (c - dynamic_shared()));
  throw std::runtime_error("CUDA emulation: a shared-memory address of memory that is not shared");
}
inline unsigned char* shared_pointer(uint64_t address, size_t bytes) {
  const size_t fixed = static_shared_bytes();
  if (address + bytes <= size_t(__stop_fastlayers_emu_shared - __start_fastlayers_emu_shared))
    return __start_fastlayers_emu_shared + address;
  if (address >= fixed && address - fixed + bytes <= dynamic_shared_bytes) return dynamic_shared() + (address - fixed);
  throw std::runtime_error("CUDA emulation: shared-memory address " + std::to_string(address) +
                           " is outside the block's shared memory");
}

// cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
// bytes): the opt-in above 48 KB, per kernel, up to an H100's 227 KB.
constexpr size_t kMaxSharedOptIn = 227 * 1024;
inline std::vector<std::pair<const void*, size_t>>& shared_opt_ins() {
  static std::vector<std::pair<const void*, size_t>> v;
  return v;
}
inline size_t shared_limit(const void* kernel) {
  for (const auto& [k, bytes] : shared_opt_ins())
    if (k == kernel) return std::max(bytes, kDefaultSharedBytes);
  return kDefaultSharedBytes;
}

// What the emulated kernels have done since the library was loaded, for
// tests that check which path a launch took: launches, blocks run, warp mma
// instructions and transposing ldmatrix instructions (one per warp), wgmma
// instructions (one per warpgroup), and the
// kernels launched (as each launch names them in the source, template
// arguments included) since the log was last read.
struct Counters {
  int64_t launches = 0, blocks = 0, mma = 0, ldmatrix_trans = 0, wgmma = 0;
  std::vector<std::string> launched;
};
inline Counters& counters() {
  static Counters c;
  return c;
}

struct LaunchConfig {
  dim3 grid;
  dim3 block;
  size_t shared = 0;
  cudaStream_t stream = nullptr;
};

inline std::mutex& launch_mutex() {
  static std::mutex m;
  return m;
}

// The emulated `kernel<<<cfg>>>(args...)`: arguments are converted to the
// kernel's parameter types once, as a launch copies them.
template <typename... Params, typename... Args>
void launch(const LaunchConfig& cfg, const char* name, void (*kernel)(Params...), Args&&... args) {
  const dim3 g = cfg.grid, b = cfg.block;
  const uint64_t threads = uint64_t(b.x) * b.y * b.z;
  auto fail = [&](const std::string& why) {
    throw std::runtime_error("CUDA emulation: invalid launch (grid " + std::to_string(g.x) + "x" + std::to_string(g.y) +
                             "x" + std::to_string(g.z) + ", block " + std::to_string(b.x) + "x" + std::to_string(b.y) +
                             "x" + std::to_string(b.z) + ", " + std::to_string(cfg.shared) +
                             " bytes of dynamic shared memory): " + why);
  };
  if (threads == 0 || g.x == 0 || g.y == 0 || g.z == 0) fail("a dimension is zero");
  if (threads > 1024 || b.z > 64) fail("too many threads per block");
  if (g.x > 0x7fffffffu || g.y > 65535u || g.z > 65535u) fail("grid too large");
  if (cfg.shared > shared_limit(reinterpret_cast<const void*>(kernel)))
    fail(cfg.shared > kDefaultSharedBytes && shared_limit(reinterpret_cast<const void*>(kernel)) == kDefaultSharedBytes
             ? "dynamic shared memory above 48 KB without an opt-in"
             : "dynamic shared memory above the kernel's opt-in");

  std::lock_guard<std::mutex> lock(launch_mutex());
  ++counters().launches;
  counters().blocks += int64_t(g.x) * g.y * g.z;
  if (counters().launched.size() < 100000) counters().launched.emplace_back(name);  // bounded if nobody reads it
  std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  reset_dynamic_shared(cfg.shared);
  gridDim = g;
  blockDim = b;
  Block& blk = block();
  const std::function<void()> body = [&] { std::apply(kernel, params); };
  for (unsigned z = 0; z < g.z; ++z)
    for (unsigned y = 0; y < g.y; ++y)
      for (unsigned x = 0; x < g.x; ++x) {
        blockIdx = uint3{x, y, z};
        ++block_serial;
        if (__start_fastlayers_emu_shared != nullptr)
          std::memset(__start_fastlayers_emu_shared, 0xff,
                      __stop_fastlayers_emu_shared - __start_fastlayers_emu_shared);
        std::fill(dynamic_shared_storage.begin(), dynamic_shared_storage.end(), 0xff);
        blk.run(body, static_cast<unsigned>(threads));
      }
}

// A warp barrier: every lane of the running thread's warp must reach it.
inline void warp_barrier() { block().wait(Block::State::AtWarpBarrier); }

// Each lane publishes `bytes` bytes; after the barrier `read(lane)` gives any
// lane's published bytes; a second barrier keeps the slots until all have read.
inline unsigned char* publish(const void* data, size_t bytes) {
  Block& b = block();
  b.ensure_slots();
  if (bytes > Block::kSlotBytes) throw std::runtime_error("CUDA emulation: collective operand too large");
  std::memcpy(b.slot(b.thread()), data, bytes);
  warp_barrier();
  return b.slot(b.thread() & ~31u);  // this warp's lane 0
}

inline void check_full_mask(unsigned mask, const char* what) {
  if (mask != 0xffffffffu)
    throw std::runtime_error(std::string("CUDA emulation: ") + what + " with a partial mask is not emulated");
}

template <typename T>
T shuffle_from(T v, unsigned src_lane) {
  const unsigned char* lane0 = publish(&v, sizeof(T));
  T out;
  std::memcpy(&out, lane0 + size_t(src_lane % 32) * Block::kSlotBytes, sizeof(T));
  warp_barrier();
  return out;
}

inline unsigned lane_id() { return block().thread() % 32; }

}  // namespace emu

inline void __syncthreads() { emu::block().wait(emu::Block::State::AtBlockBarrier); }

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  emu::check_full_mask(mask, "__shfl_xor_sync");
  if (width != 32) throw std::runtime_error("CUDA emulation: __shfl_xor_sync width != 32 is not emulated");
  return emu::shuffle_from(v, emu::lane_id() ^ static_cast<unsigned>(lane_mask));
}
