// CPU stand-ins for the CUDA names used by mrfa/ops/corr_lookup/csrc/corr_lookup_kernel.cu, so the real kernel
// source and the real wrapper (corr_lookup.cpp) compile as C++ and run on CPU tensors (see test_corr_emulation.py).
// A launch runs every block, and inside it every thread, one after another. Threads run in reverse order and
// blocks may be capped (MRFA_MAX_BLOCKS) so that the grid-stride loop is taken; a kernel that relied on an order
// or on one element per thread would show it. No shared memory or __syncthreads: the kernels use neither.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <stdexcept>
#include <utility>

#define __global__
#define __launch_bounds__(...)

struct dim3 {
  unsigned int x = 1, y = 1, z = 1;
};

// Per-launch "registers" of the emulated thread; read by the kernel body.
inline thread_local dim3 blockIdx, threadIdx, blockDim, gridDim;

using cudaStream_t = void*;

namespace c10 {
namespace cuda {

struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};

struct EmulatedStream {
  operator cudaStream_t() const { return nullptr; }
};

inline EmulatedStream getCurrentCUDAStream() { return {}; }

}  // namespace cuda
}  // namespace c10

#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (0)

namespace mrfa_corr {

inline int64_t emulated_launches = 0;  // counted for the test's grid-stride check

template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), unsigned int blocks, unsigned int threads, cudaStream_t, Args&&... args) {
  if (blocks == 0 || threads == 0) throw std::runtime_error("emulated launch with an empty grid");
  ++emulated_launches;
  gridDim = dim3{blocks, 1, 1};
  blockDim = dim3{threads, 1, 1};
  for (unsigned int b = 0; b < blocks; ++b) {
    blockIdx = dim3{b, 0, 0};
    for (unsigned int t = threads; t-- > 0;) {
      threadIdx = dim3{t, 0, 0};
      kernel(args...);
    }
  }
}

}  // namespace mrfa_corr
