// Fused correlation-pyramid lookup: the per-query math shared by the CUDA kernel
// (corr_lookup_kernel.cu; also built for the CPU by tests/cuda_emulation/). No CUDA or torch headers here.
//
// Layouts (all contiguous):
//   level l   [B, Q, H_l, W_l]      one source map per query q (q = y * w + x on the lookup grid)
//   coords    [B, 2, Q]             window centres (x, y) in level-0 source pixels; level l uses coords * 2^-l
//   out       [B, L * K * K, Q]     K = 2R + 1, channel l*K*K + u*K + v = offset (u - R, v - R): x outer, y inner
// Semantics: bilinear, align_corners=True, zero padding (= grid_sample in the PyTorch reference).
// A query reads only the (2R+2)^2 integer positions floor(x)-R .. floor(x)+R+1 (same in y) of its own slice,
// so the backward writes each query's slice of the level gradients without atomics (owner computes).
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MRFA_HD __host__ __device__ __forceinline__
#define MRFA_UNROLL _Pragma("unroll")
#else
#define MRFA_HD inline
#define MRFA_UNROLL
#endif

namespace mrfa_corr {

constexpr int kMaxLevels = 4;

template <typename scalar_t>
struct Levels {
  const scalar_t* data[kMaxLevels];
  int64_t height[kMaxLevels];
  int64_t width[kMaxLevels];
  int num_levels;
};

template <typename scalar_t>
struct GradLevels {
  scalar_t* data[kMaxLevels];  // pre-zeroed, same shapes as Levels
};

template <typename acc_t>
struct Footing {
  int64_t x0, y0;  // integer position of window entry [0][0] = floor(x) - R, floor(y) - R
  acc_t ax, ay;    // fractional parts
  bool active;     // false: not finite, or the whole window lies outside the map (all taps 0, no gradient)
};

template <typename T>
MRFA_HD T floor_value(T x) {
#if defined(__CUDA_ARCH__)
  return floor(x);
#else
  return std::floor(x);
#endif
}

template <typename acc_t, int R>
MRFA_HD Footing<acc_t> make_footing(acc_t x, acc_t y, int64_t height, int64_t width) {
  Footing<acc_t> f;
  // The window touches the map iff -(R+1) <= x < W + R (same in y); written so that NaN fails.
  f.active = (x >= acc_t(-(R + 1))) && (x < acc_t(width + R)) && (y >= acc_t(-(R + 1))) && (y < acc_t(height + R));
  if (!f.active) {
    f.x0 = f.y0 = 0;
    f.ax = f.ay = acc_t(0);
    return f;
  }
  const acc_t fx = floor_value(x), fy = floor_value(y);
  f.ax = x - fx;
  f.ay = y - fy;
  f.x0 = static_cast<int64_t>(fx) - R;
  f.y0 = static_cast<int64_t>(fy) - R;
  return f;
}

// col[j] = slice[y0 + j][x0 + i] for window column i, 0 outside the map (64-bit offsets).
template <typename scalar_t, typename acc_t, int R>
MRFA_HD void load_column(const scalar_t* slice, int64_t height, int64_t width, const Footing<acc_t>& f, int i,
                         acc_t (&col)[2 * R + 2]) {
  const int64_t xx = f.x0 + i;
  const bool col_ok = f.active && xx >= 0 && xx < width;
  MRFA_UNROLL
  for (int j = 0; j < 2 * R + 2; ++j) {
    const int64_t yy = f.y0 + j;
    col[j] = (col_ok && yy >= 0 && yy < height) ? static_cast<acc_t>(slice[yy * width + xx]) : acc_t(0);
  }
}

// slice[y0 + j][x0 + i] = col[j] where inside the map (the query's own slice: plain stores).
template <typename scalar_t, typename acc_t, int R>
MRFA_HD void store_column(scalar_t* slice, int64_t height, int64_t width, const Footing<acc_t>& f, int i,
                          const acc_t (&col)[2 * R + 2]) {
  const int64_t xx = f.x0 + i;
  if (xx < 0 || xx >= width) return;
  MRFA_UNROLL
  for (int j = 0; j < 2 * R + 2; ++j) {
    const int64_t yy = f.y0 + j;
    if (yy >= 0 && yy < height) slice[yy * width + xx] = static_cast<scalar_t>(col[j]);
  }
}

// Forward for query (b, q): all levels, K*K taps each, written in the final layout. The window is walked
// column by column (two columns live), so registers stay O(R) instead of O(R^2).
template <typename scalar_t, typename acc_t, int R>
MRFA_HD void forward_query(const Levels<scalar_t>& lv, const acc_t* coords, acc_t* out, int64_t b, int64_t q,
                           int64_t num_queries) {
  constexpr int K = 2 * R + 1;
  const int64_t Q = num_queries;
  const acc_t cx = coords[(b * 2) * Q + q];
  const acc_t cy = coords[(b * 2 + 1) * Q + q];
  acc_t scale = acc_t(1);
  MRFA_UNROLL
  for (int l = 0; l < kMaxLevels; ++l, scale *= acc_t(0.5)) {  // unrolled: static indexing into lv
    if (l >= lv.num_levels) break;
    const int64_t H = lv.height[l], W = lv.width[l];
    const Footing<acc_t> f = make_footing<acc_t, R>(cx * scale, cy * scale, H, W);
    const scalar_t* slice = lv.data[l] + (b * Q + q) * H * W;
    const acc_t bx = acc_t(1) - f.ax, by = acc_t(1) - f.ay;
    const acc_t w00 = bx * by, w01 = f.ax * by, w10 = bx * f.ay, w11 = f.ax * f.ay;
    acc_t* o = out + (b * lv.num_levels * K * K + static_cast<int64_t>(l) * K * K) * Q + q;
    acc_t left[K + 1], right[K + 1];
    load_column<scalar_t, acc_t, R>(slice, H, W, f, 0, left);
    MRFA_UNROLL
    for (int u = 0; u < K; ++u) {
      load_column<scalar_t, acc_t, R>(slice, H, W, f, u + 1, right);
      MRFA_UNROLL
      for (int v = 0; v < K; ++v) {
        o[static_cast<int64_t>(u * K + v) * Q] =
            w00 * left[v] + w01 * right[v] + w10 * left[v + 1] + w11 * right[v + 1];
      }
      MRFA_UNROLL
      for (int j = 0; j < K + 1; ++j) left[j] = right[j];
    }
  }
}

// Backward for query (b, q): writes its own slice of every level gradient and its coordinate gradient.
// Column u of the window gradient is complete once taps u-1 and u are done, so it is stored right away.
template <typename scalar_t, typename acc_t, int R>
MRFA_HD void backward_query(const Levels<scalar_t>& lv, const GradLevels<scalar_t>& glv, const acc_t* coords,
                            const acc_t* grad_out, acc_t* grad_coords, int64_t b, int64_t q, int64_t num_queries) {
  constexpr int K = 2 * R + 1;
  const int64_t Q = num_queries;
  const acc_t cx = coords[(b * 2) * Q + q];
  const acc_t cy = coords[(b * 2 + 1) * Q + q];
  acc_t gx = acc_t(0), gy = acc_t(0);
  acc_t scale = acc_t(1);
  MRFA_UNROLL
  for (int l = 0; l < kMaxLevels; ++l, scale *= acc_t(0.5)) {
    if (l >= lv.num_levels) break;
    const int64_t H = lv.height[l], W = lv.width[l];
    const Footing<acc_t> f = make_footing<acc_t, R>(cx * scale, cy * scale, H, W);
    if (!f.active) continue;  // zero taps, zero gradients (the level gradient is pre-zeroed)
    const int64_t base = (b * Q + q) * H * W;
    const scalar_t* slice = lv.data[l] + base;
    scalar_t* gslice = glv.data[l] + base;
    const acc_t ax = f.ax, ay = f.ay, bx = acc_t(1) - f.ax, by = acc_t(1) - f.ay;
    const acc_t* g = grad_out + (b * lv.num_levels * K * K + static_cast<int64_t>(l) * K * K) * Q + q;
    acc_t left[K + 1], right[K + 1], gleft[K + 1], gright[K + 1];
    load_column<scalar_t, acc_t, R>(slice, H, W, f, 0, left);
    MRFA_UNROLL
    for (int j = 0; j < K + 1; ++j) gleft[j] = acc_t(0);
    acc_t gax = acc_t(0), gay = acc_t(0);
    MRFA_UNROLL
    for (int u = 0; u < K; ++u) {
      load_column<scalar_t, acc_t, R>(slice, H, W, f, u + 1, right);
      MRFA_UNROLL
      for (int j = 0; j < K + 1; ++j) gright[j] = acc_t(0);
      MRFA_UNROLL
      for (int v = 0; v < K; ++v) {
        const acc_t gv = g[static_cast<int64_t>(u * K + v) * Q];
        gleft[v] += gv * bx * by;
        gright[v] += gv * ax * by;
        gleft[v + 1] += gv * bx * ay;
        gright[v + 1] += gv * ax * ay;
        gax += gv * (by * (right[v] - left[v]) + ay * (right[v + 1] - left[v + 1]));
        gay += gv * (bx * (left[v + 1] - left[v]) + ax * (right[v + 1] - right[v]));
      }
      store_column<scalar_t, acc_t, R>(gslice, H, W, f, u, gleft);
      MRFA_UNROLL
      for (int j = 0; j < K + 1; ++j) {
        left[j] = right[j];
        gleft[j] = gright[j];
      }
    }
    store_column<scalar_t, acc_t, R>(gslice, H, W, f, K, gleft);
    gx += scale * gax;
    gy += scale * gay;
  }
  grad_coords[(b * 2) * Q + q] = gx;
  grad_coords[(b * 2 + 1) * Q + q] = gy;
}

}  // namespace mrfa_corr
