#include "nmcm/layers/maxpool2d.h"

#include <cstddef>
#include <limits>

#include "../vec.h"

namespace nmcm {
namespace {

// The input rows (or columns) [lo, hi) of window o: PyTorch's window clipped to the input, which is
// what padding with -inf amounts to. Never empty when 2·pad <= kernel (checked at load).
inline void window(uint32_t o, uint32_t stride, uint32_t pad, uint32_t kernel, uint32_t size,
                   uint32_t* lo, uint32_t* hi) {
  const int64_t start = int64_t{o} * stride - pad;
  const int64_t end = start + kernel;
  *lo = static_cast<uint32_t>(start < 0 ? 0 : start);
  *hi = static_cast<uint32_t>(end > size ? size : end);
}

// Largest value of a window and whether it holds a NaN. Written as selects and ORs, which compile
// to branch-free max instructions: which element wins is data-dependent and a branch on it would
// mispredict about half the time.
inline float window_max(const float* x, uint32_t w, uint32_t y0, uint32_t y1, uint32_t x0,
                        uint32_t x1, bool* nan) {
  float max = -std::numeric_limits<float>::infinity();
  bool any_nan = false;
  for (uint32_t iy = y0; iy < y1; ++iy) {
    for (uint32_t ix = x0; ix < x1; ++ix) {
      const float v = x[iy * w + ix];
      max = v > max ? v : max;
      any_nan |= v != v;
    }
  }
  *nan = any_nan;
  return max;
}

// Index in the plane of the element PyTorch's CPU kernel picks: walking the window in row-major
// order from its first position, it moves to a later element only if that one is strictly greater
// or NaN. So the pick is the last NaN if there is one, else the first occurrence of the maximum
// (ties go to the first).
inline uint32_t window_argmax(const float* x, uint32_t w, uint32_t y0, uint32_t y1, uint32_t x0,
                              uint32_t x1) {
  uint32_t at = y0 * w + x0;
  float best = x[at];
  for (uint32_t iy = y0; iy < y1; ++iy) {
    for (uint32_t ix = x0; ix < x1; ++ix) {
      const uint32_t i = iy * w + ix;
      const float v = x[i];
      const bool hit = (v > best) | (v != v);
      best = hit ? v : best;
      at = hit ? i : at;
    }
  }
  return at;
}

// The common 2×2 window at stride 2 without padding: the windows tile the input, so the maximum is
// a plain comparison chain and the backward pass writes every input position once, with no scatter.
// The chain is exact for finite values only; each pass also sums what it reads and returns whether
// that sum is finite. If not (a NaN or an infinity in the plane, or a finite overflow), the caller
// recomputes the plane with the general kernel, whose NaN handling is PyTorch's.
inline bool is_2x2_tiling(const Geom2d& g) {
  return g.kh == 2 && g.kw == 2 && g.sh == 2 && g.sw == 2 && g.ph == 0 && g.pw == 0;
}

inline float max2(float a, float b) { return b > a ? b : a; }

inline bool finite(float sum) { return sum - sum == 0.0f; }

bool forward_2x2(float* o, const float* x, const Geom2d& g) {
  float sum = 0.0f;
  for (uint32_t oy = 0; oy < g.oh; ++oy) {
    const float* r0 = x + size_t{2 * oy} * g.w;
    const float* r1 = r0 + g.w;
    float* orow = o + size_t{oy} * g.ow;
    for (uint32_t ox = 0; ox < g.ow; ++ox, r0 += 2, r1 += 2) {
      const float a = r0[0], b = r0[1], c = r1[0], d = r1[1];
      sum += (a + b) + (c + d);
      orow[ox] = max2(max2(max2(a, b), c), d);
    }
  }
  return finite(sum);
}

bool backward_2x2(float* dx, const float* go, const float* x, const Geom2d& g) {
  float sum = 0.0f;
  // A row or column beyond the last whole window (odd sizes) gets no gradient.
  if (g.h > 2 * g.oh) vec::fill(dx + size_t{2 * g.oh} * g.w, 0.0f, g.w);
  if (g.w > 2 * g.ow) {
    for (uint32_t y = 0; y < 2 * g.oh; ++y) dx[size_t{y} * g.w + 2 * g.ow] = 0.0f;
  }
  for (uint32_t oy = 0; oy < g.oh; ++oy) {
    const float* r0 = x + size_t{2 * oy} * g.w;
    const float* r1 = r0 + g.w;
    float* d0 = dx + size_t{2 * oy} * g.w;
    float* d1 = d0 + g.w;
    const float* grow = go + size_t{oy} * g.ow;
    for (uint32_t ox = 0; ox < g.ow; ++ox, r0 += 2, r1 += 2, d0 += 2, d1 += 2) {
      // The first maximum in row-major order takes the gradient.
      const float a = r0[0], b = r0[1], c = r1[0], d = r1[1];
      sum += (a + b) + (c + d);
      const float ab = max2(a, b), cd = max2(c, d);
      const float v = grow[ox];
      d0[0] = d0[1] = d1[0] = d1[1] = 0.0f;
      float* pick = !(cd > ab) ? (b > a ? d0 + 1 : d0) : (d > c ? d1 + 1 : d1);
      *pick = v;
    }
  }
  return finite(sum);
}

}  // namespace

void maxpool2d_forward(float* out, const float* in, const Geom2d& g, uint32_t n) {
  const size_t in_plane = size_t{g.h} * g.w;
  const size_t out_plane = size_t{g.oh} * g.ow;
  const bool tiling = is_2x2_tiling(g);
  for (size_t p = 0; p < size_t{n} * g.c; ++p) {
    const float* x = in + p * in_plane;
    float* o = out + p * out_plane;
    if (tiling && forward_2x2(o, x, g)) continue;
    for (uint32_t oy = 0; oy < g.oh; ++oy) {
      uint32_t y0, y1;
      window(oy, g.sh, g.ph, g.kh, g.h, &y0, &y1);
      for (uint32_t ox = 0; ox < g.ow; ++ox) {
        uint32_t x0, x1;
        window(ox, g.sw, g.pw, g.kw, g.w, &x0, &x1);
        bool nan = false;
        const float max = window_max(x, g.w, y0, y1, x0, x1, &nan);
        o[size_t{oy} * g.ow + ox] = nan ? std::numeric_limits<float>::quiet_NaN() : max;
      }
    }
  }
}

void maxpool2d_backward(float* din, const float* dout, const float* in, const Geom2d& g,
                        uint32_t n) {
  const size_t in_plane = size_t{g.h} * g.w;
  const size_t out_plane = size_t{g.oh} * g.ow;
  const bool tiling = is_2x2_tiling(g);
  for (size_t p = 0; p < size_t{n} * g.c; ++p) {
    const float* x = in + p * in_plane;
    const float* go = dout + p * out_plane;
    float* dx = din + p * in_plane;
    if (tiling && backward_2x2(dx, go, x, g)) continue;
    vec::fill(dx, 0.0f, static_cast<uint32_t>(in_plane));
    for (uint32_t oy = 0; oy < g.oh; ++oy) {
      uint32_t y0, y1;
      window(oy, g.sh, g.ph, g.kh, g.h, &y0, &y1);
      for (uint32_t ox = 0; ox < g.ow; ++ox) {
        uint32_t x0, x1;
        window(ox, g.sw, g.pw, g.kw, g.w, &x0, &x1);
        dx[window_argmax(x, g.w, y0, y1, x0, x1)] += go[size_t{oy} * g.ow + ox];  // overlaps add
      }
    }
  }
}

namespace {

Status check(const LayerDesc& d) {
  if (d.in.rank != 3 || d.out.rank != 3 || d.out.dims[0] != d.in.dims[0]) {
    return error(StatusCode::kMalformed, "maxpool2d needs (C, H, W) input and output, same C");
  }
  if (d.kernel_h == 0 || d.kernel_w == 0 || d.stride_h == 0 || d.stride_w == 0) {
    return error(StatusCode::kMalformed, "maxpool2d kernel and stride must be at least 1");
  }
  // PyTorch's rule; it also guarantees every window holds at least one real input position.
  if (2u * d.pad_h > d.kernel_h || 2u * d.pad_w > d.kernel_w) {
    return error(StatusCode::kMalformed, "maxpool2d padding exceeds half the kernel");
  }
  if (d.out.dims[1] != window_out(d.in.dims[1], d.kernel_h, d.stride_h, d.pad_h) ||
      d.out.dims[2] != window_out(d.in.dims[2], d.kernel_w, d.stride_w, d.pad_w)) {
    return error(StatusCode::kMalformed, "maxpool2d output size does not follow from its options");
  }
  return ok_status();
}

bool param_shape(const LayerDesc&, uint8_t, Shape*) { return false; }

void forward(const LayerDesc& d, const LayerArgs& a) {
  maxpool2d_forward(a.out, a.in, geom2d(d), a.n);
}

void backward(const LayerDesc& d, const LayerArgs& a) {
  if (a.din) maxpool2d_backward(a.din, a.dout, a.in, geom2d(d), a.n);
}

}  // namespace

const LayerKernel kMaxPool2dKernel = {"maxpool2d", kReadsInput, check,
                                      param_shape, forward,     backward};

}  // namespace nmcm
