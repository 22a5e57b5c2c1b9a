// CUDA kernels of the fused correlation-pyramid lookup (mrfa::corr_lookup): launchers for the math in
// corr_lookup_core.h. One thread per (batch, query) loops over all levels (one launch per lookup), walks its
// (2R+2)^2 window column by column in registers, accumulates in float (double for double inputs) and writes
// the [B, L*(2R+1)^2, h, w] output directly. Backward: owner computes (no atomics, deterministic) and returns
// the coordinate gradient too. Inputs are validated and made contiguous by corr_lookup.cpp.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "corr_lookup_core.h"
#include "corr_lookup_launch.h"

namespace {

constexpr int kThreads = 128;
constexpr int64_t kMaxBlocks = MRFA_MAX_BLOCKS;  // grid-stride beyond this

template <typename scalar_t, typename acc_t, int R>
__global__ void __launch_bounds__(kThreads)
    corr_lookup_forward_kernel(const mrfa_corr::Levels<scalar_t> lv, const acc_t* __restrict__ coords,
                               acc_t* __restrict__ out, int64_t total, int64_t num_queries) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t b = i / num_queries;
    mrfa_corr::forward_query<scalar_t, acc_t, R>(lv, coords, out, b, i - b * num_queries, num_queries);
  }
}

template <typename scalar_t, typename acc_t, int R>
__global__ void __launch_bounds__(kThreads)
    corr_lookup_backward_kernel(const mrfa_corr::Levels<scalar_t> lv, const mrfa_corr::GradLevels<scalar_t> glv,
                                const acc_t* __restrict__ coords, const acc_t* __restrict__ grad_out,
                                acc_t* __restrict__ grad_coords, int64_t total, int64_t num_queries) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * gridDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t b = i / num_queries;
    mrfa_corr::backward_query<scalar_t, acc_t, R>(lv, glv, coords, grad_out, grad_coords, b, i - b * num_queries,
                                                  num_queries);
  }
}

template <typename scalar_t>
mrfa_corr::Levels<scalar_t> make_levels(const std::vector<at::Tensor>& levels) {
  mrfa_corr::Levels<scalar_t> lv{};
  lv.num_levels = static_cast<int>(levels.size());
  for (size_t l = 0; l < levels.size(); ++l) {
    lv.data[l] = levels[l].data_ptr<scalar_t>();
    lv.height[l] = levels[l].size(2);
    lv.width[l] = levels[l].size(3);
  }
  return lv;
}

// Calls fn(std::integral_constant<int, R>{}) for the runtime radius (0..4).
template <typename Fn>
void dispatch_radius(int64_t radius, Fn&& fn) {
  switch (radius) {
    case 0: fn(std::integral_constant<int, 0>{}); break;
    case 1: fn(std::integral_constant<int, 1>{}); break;
    case 2: fn(std::integral_constant<int, 2>{}); break;
    case 3: fn(std::integral_constant<int, 3>{}); break;
    case 4: fn(std::integral_constant<int, 4>{}); break;
    default: TORCH_CHECK(false, "mrfa corr_lookup CUDA kernel supports radius 0..4, got ", radius);
  }
}

unsigned int num_blocks(int64_t total) {
  return static_cast<unsigned int>(std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks));
}

}  // namespace

at::Tensor corr_lookup_forward_cuda(const std::vector<at::Tensor>& levels, const at::Tensor& coords, int64_t radius) {
  const c10::cuda::CUDAGuard guard(coords.device());
  const int64_t batch = levels[0].size(0), num_queries = levels[0].size(1);
  const int64_t taps = (2 * radius + 1) * (2 * radius + 1);
  at::Tensor out = at::empty({batch, static_cast<int64_t>(levels.size()) * taps, coords.size(2), coords.size(3)},
                             coords.options());
  const int64_t total = batch * num_queries;
  if (total == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, levels[0].scalar_type(), "mrfa_corr_lookup_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const mrfa_corr::Levels<scalar_t> lv = make_levels<scalar_t>(levels);
    const acc_t* c = coords.data_ptr<acc_t>();
    acc_t* o = out.data_ptr<acc_t>();
    dispatch_radius(radius, [&](auto r) {
      constexpr int R = decltype(r)::value;
      mrfa_corr::launch(corr_lookup_forward_kernel<scalar_t, acc_t, R>, num_blocks(total), kThreads, stream, lv, c, o,
                        total, num_queries);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

std::vector<at::Tensor> corr_lookup_backward_cuda(const at::Tensor& grad_out, const std::vector<at::Tensor>& levels,
                                                  const at::Tensor& coords, int64_t radius) {
  const c10::cuda::CUDAGuard guard(coords.device());
  const int64_t batch = levels[0].size(0), num_queries = levels[0].size(1);
  std::vector<at::Tensor> grads;
  grads.reserve(levels.size() + 1);
  for (const at::Tensor& level : levels) grads.push_back(at::zeros_like(level));  // owner-computes target
  at::Tensor grad_coords = at::empty_like(coords);
  const int64_t total = batch * num_queries;
  if (total > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, levels[0].scalar_type(), "mrfa_corr_lookup_backward",
                                    [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const mrfa_corr::Levels<scalar_t> lv = make_levels<scalar_t>(levels);
      mrfa_corr::GradLevels<scalar_t> glv{};
      for (size_t l = 0; l < levels.size(); ++l) glv.data[l] = grads[l].data_ptr<scalar_t>();
      const acc_t* c = coords.data_ptr<acc_t>();
      const acc_t* g = grad_out.data_ptr<acc_t>();
      acc_t* gc = grad_coords.data_ptr<acc_t>();
      dispatch_radius(radius, [&](auto r) {
        constexpr int R = decltype(r)::value;
        mrfa_corr::launch(corr_lookup_backward_kernel<scalar_t, acc_t, R>, num_blocks(total), kThreads, stream, lv,
                          glv, c, g, gc, total, num_queries);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
    });
  }
  grads.push_back(grad_coords);
  return grads;
}
