// Host build of the kernel's per-query math (corr_lookup_core.h) for the CPU test suite: the exact code
// the CUDA kernel runs per thread, looped over queries on the host. Plain C ABI, loaded with ctypes;
// float and double only (the CUDA build adds half and bfloat16). Not part of the library's code path.
#include <cstdint>

#include "corr_lookup_core.h"

namespace {

template <typename T, int R>
void forward_all(const T* const* levels, const int64_t* heights, const int64_t* widths, int num_levels,
                 const T* coords, T* out, int64_t batch, int64_t num_queries) {
  mrfa_corr::Levels<T> lv;
  lv.num_levels = num_levels;
  for (int l = 0; l < num_levels; ++l) {
    lv.data[l] = levels[l];
    lv.height[l] = heights[l];
    lv.width[l] = widths[l];
  }
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t q = 0; q < num_queries; ++q) mrfa_corr::forward_query<T, T, R>(lv, coords, out, b, q, num_queries);
}

template <typename T, int R>
void backward_all(const T* const* levels, T* const* grad_levels, const int64_t* heights, const int64_t* widths,
                  int num_levels, const T* coords, const T* grad_out, T* grad_coords, int64_t batch,
                  int64_t num_queries) {
  mrfa_corr::Levels<T> lv;
  mrfa_corr::GradLevels<T> glv;
  lv.num_levels = num_levels;
  for (int l = 0; l < num_levels; ++l) {
    lv.data[l] = levels[l];
    lv.height[l] = heights[l];
    lv.width[l] = widths[l];
    glv.data[l] = grad_levels[l];
  }
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t q = 0; q < num_queries; ++q)
      mrfa_corr::backward_query<T, T, R>(lv, glv, coords, grad_out, grad_coords, b, q, num_queries);
}

template <typename T>
int forward_dispatch(int radius, const T* const* levels, const int64_t* heights, const int64_t* widths,
                     int num_levels, const T* coords, T* out, int64_t batch, int64_t num_queries) {
  if (num_levels < 1 || num_levels > mrfa_corr::kMaxLevels) return 2;
  switch (radius) {
    case 0: forward_all<T, 0>(levels, heights, widths, num_levels, coords, out, batch, num_queries); return 0;
    case 1: forward_all<T, 1>(levels, heights, widths, num_levels, coords, out, batch, num_queries); return 0;
    case 2: forward_all<T, 2>(levels, heights, widths, num_levels, coords, out, batch, num_queries); return 0;
    case 3: forward_all<T, 3>(levels, heights, widths, num_levels, coords, out, batch, num_queries); return 0;
    case 4: forward_all<T, 4>(levels, heights, widths, num_levels, coords, out, batch, num_queries); return 0;
    default: return 1;
  }
}

template <typename T>
int backward_dispatch(int radius, const T* const* levels, T* const* grad_levels, const int64_t* heights,
                      const int64_t* widths, int num_levels, const T* coords, const T* grad_out, T* grad_coords,
                      int64_t batch, int64_t num_queries) {
  if (num_levels < 1 || num_levels > mrfa_corr::kMaxLevels) return 2;
#define MRFA_BWD_CASE(RR)                                                                                    \
  case RR:                                                                                                   \
    backward_all<T, RR>(levels, grad_levels, heights, widths, num_levels, coords, grad_out, grad_coords, batch, \
                        num_queries);                                                                        \
    return 0;
  switch (radius) {
    MRFA_BWD_CASE(0)
    MRFA_BWD_CASE(1)
    MRFA_BWD_CASE(2)
    MRFA_BWD_CASE(3)
    MRFA_BWD_CASE(4)
    default: return 1;
  }
#undef MRFA_BWD_CASE
}

}  // namespace

extern "C" {

int mrfa_corr_forward_f32(int radius, const float* const* levels, const int64_t* heights, const int64_t* widths,
                          int num_levels, const float* coords, float* out, int64_t batch, int64_t num_queries) {
  return forward_dispatch<float>(radius, levels, heights, widths, num_levels, coords, out, batch, num_queries);
}

int mrfa_corr_forward_f64(int radius, const double* const* levels, const int64_t* heights, const int64_t* widths,
                          int num_levels, const double* coords, double* out, int64_t batch, int64_t num_queries) {
  return forward_dispatch<double>(radius, levels, heights, widths, num_levels, coords, out, batch, num_queries);
}

int mrfa_corr_backward_f32(int radius, const float* const* levels, float* const* grad_levels, const int64_t* heights,
                           const int64_t* widths, int num_levels, const float* coords, const float* grad_out,
                           float* grad_coords, int64_t batch, int64_t num_queries) {
  return backward_dispatch<float>(radius, levels, grad_levels, heights, widths, num_levels, coords, grad_out,
                                  grad_coords, batch, num_queries);
}

int mrfa_corr_backward_f64(int radius, const double* const* levels, double* const* grad_levels,
                           const int64_t* heights, const int64_t* widths, int num_levels, const double* coords,
                           const double* grad_out, double* grad_coords, int64_t batch, int64_t num_queries) {
  return backward_dispatch<double>(radius, levels, grad_levels, heights, widths, num_levels, coords, grad_out,
                                   grad_coords, batch, num_queries);
}

}  // extern "C"
