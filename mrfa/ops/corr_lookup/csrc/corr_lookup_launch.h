// Device plumbing of the fused lookup's CUDA launchers (corr_lookup_kernel.cu), kept in one place so the
// same kernel source also builds as plain C++ for the CPU test suite.
//
// Normal build (nvcc): the c10 CUDA headers, kernel attributes, and mrfa_corr::launch() = <<<grid, block>>>.
// MRFA_CUDA_EMULATION (tests/cuda_emulation/, host compiler): the test's shim header supplies the same names
// (__global__, blockIdx, CUDAGuard, getCurrentCUDAStream, C10_CUDA_KERNEL_LAUNCH_CHECK, launch()) and runs each
// launch as serial loops over blocks and threads, so the real launchers and the real wrapper run on CPU tensors.
#pragma once

#if defined(MRFA_CUDA_EMULATION)
#include "cuda_emulation.h"  // tests/cuda_emulation/cuda_emulation.h (on the test build's include path)
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <utility>

namespace mrfa_corr {

// The one kernel launch of this extension: kernel<<<blocks, threads, 0, stream>>>(args...).
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), unsigned int blocks, unsigned int threads, cudaStream_t stream,
            Args&&... args) {
  kernel<<<blocks, threads, 0, stream>>>(std::forward<Args>(args)...);
}

}  // namespace mrfa_corr
#endif

// Grid-stride loops start beyond this many blocks (the emulation build lowers it to take that path).
#ifndef MRFA_MAX_BLOCKS
#define MRFA_MAX_BLOCKS (int64_t(1) << 20)
#endif
