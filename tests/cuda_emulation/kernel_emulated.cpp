// The real CUDA kernel source, compiled as C++ against the shim in cuda_emulation.h (MRFA_CUDA_EMULATION).
#include "corr_lookup_kernel.cu"
