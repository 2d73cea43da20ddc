#include "nmcm/layers/conv2d.h"

#include <cstddef>

#include "../vec.h"
#include "window.h"

namespace nmcm {

// Direct convolution, no im2col buffer (no extra memory). Loops run per kernel tap over output
// rows, so the innermost loop walks a contiguous output row and, at stride 1, a contiguous input
// row; padding is handled by clipping each row's range (valid_span) instead of testing per element.

void conv2d_forward(float* out, const float* in, const float* w, const float* b, const Geom2d& g,
                    uint32_t n) {
  const size_t in_plane = size_t{g.h} * g.w;
  const size_t out_plane = size_t{g.oh} * g.ow;
  const size_t taps = size_t{g.kh} * g.kw;
  for (uint32_t s = 0; s < n; ++s) {
    for (uint32_t oc = 0; oc < g.oc; ++oc) {
      float* o = out + (size_t{s} * g.oc + oc) * out_plane;
      vec::fill(o, b ? b[oc] : 0.0f, static_cast<uint32_t>(out_plane));
      for (uint32_t ic = 0; ic < g.c; ++ic) {
        const float* x = in + (size_t{s} * g.c + ic) * in_plane;
        const float* wk = w + (size_t{oc} * g.c + ic) * taps;
        for (uint32_t ky = 0; ky < g.kh; ++ky) {
          const Span rows = valid_span(g.oh, g.h, g.sh, tap_offset(ky, g.ph));
          for (uint32_t kx = 0; kx < g.kw; ++kx) {
            const Span cols = valid_span(g.ow, g.w, g.sw, tap_offset(kx, g.pw));
            if (cols.len() == 0) continue;
            const float wv = wk[ky * g.kw + kx];
            const size_t ix0 = size_t{cols.lo} * g.sw + kx - g.pw;
            for (uint32_t oy = rows.lo; oy < rows.hi; ++oy) {
              const size_t iy = size_t{oy} * g.sh + ky - g.ph;
              float* orow = o + size_t{oy} * g.ow + cols.lo;
              const float* xrow = x + iy * g.w + ix0;
              if (g.sw == 1) {
                vec::axpy(orow, xrow, wv, cols.len());
              } else {
                for (uint32_t i = 0; i < cols.len(); ++i) orow[i] += wv * xrow[size_t{i} * g.sw];
              }
            }
          }
        }
      }
    }
  }
}

void conv2d_backward(float* din, float* dw, float* db, const float* dout, const float* in,
                     const float* w, const Geom2d& g, uint32_t n) {
  const size_t in_plane = size_t{g.h} * g.w;
  const size_t out_plane = size_t{g.oh} * g.ow;
  const size_t taps = size_t{g.kh} * g.kw;
  if (din) vec::fill(din, 0.0f, static_cast<uint32_t>(size_t{n} * g.c * in_plane));
  for (uint32_t s = 0; s < n; ++s) {
    for (uint32_t oc = 0; oc < g.oc; ++oc) {
      const float* go = dout + (size_t{s} * g.oc + oc) * out_plane;
      if (db) db[oc] += vec::sum(go, static_cast<uint32_t>(out_plane));
      for (uint32_t ic = 0; ic < g.c; ++ic) {
        const float* x = in + (size_t{s} * g.c + ic) * in_plane;
        const float* wk = w + (size_t{oc} * g.c + ic) * taps;
        float* dwk = dw + (size_t{oc} * g.c + ic) * taps;
        float* dx = din ? din + (size_t{s} * g.c + ic) * in_plane : nullptr;
        for (uint32_t ky = 0; ky < g.kh; ++ky) {
          const Span rows = valid_span(g.oh, g.h, g.sh, tap_offset(ky, g.ph));
          for (uint32_t kx = 0; kx < g.kw; ++kx) {
            const Span cols = valid_span(g.ow, g.w, g.sw, tap_offset(kx, g.pw));
            if (cols.len() == 0) continue;
            const size_t ix0 = size_t{cols.lo} * g.sw + kx - g.pw;
            const float wv = wk[ky * g.kw + kx];
            float acc = 0.0f;  // this sample's contribution to dw of this tap
            for (uint32_t oy = rows.lo; oy < rows.hi; ++oy) {
              const size_t iy = size_t{oy} * g.sh + ky - g.ph;
              const float* grow = go + size_t{oy} * g.ow + cols.lo;
              const float* xrow = x + iy * g.w + ix0;
              if (g.sw == 1) {
                acc += vec::dot(grow, xrow, cols.len());
                if (dx) vec::axpy(dx + iy * g.w + ix0, grow, wv, cols.len());
              } else {
                float* dxrow = dx ? dx + iy * g.w + ix0 : nullptr;
                for (uint32_t i = 0; i < cols.len(); ++i) {
                  acc += grow[i] * xrow[size_t{i} * g.sw];
                  if (dxrow) dxrow[size_t{i} * g.sw] += wv * grow[i];
                }
              }
            }
            dwk[ky * g.kw + kx] += acc;
          }
        }
      }
    }
  }
}

namespace {

Status check(const LayerDesc& d) {
  if (d.in.rank != 3 || d.out.rank != 3) {
    return error(StatusCode::kMalformed, "conv2d needs (C, H, W) input and output");
  }
  if (d.kernel_h == 0 || d.kernel_w == 0 || d.stride_h == 0 || d.stride_w == 0) {
    return error(StatusCode::kMalformed, "conv2d kernel and stride must be at least 1");
  }
  if (d.out.dims[1] != window_out(d.in.dims[1], d.kernel_h, d.stride_h, d.pad_h) ||
      d.out.dims[2] != window_out(d.in.dims[2], d.kernel_w, d.stride_w, d.pad_w)) {
    return error(StatusCode::kMalformed, "conv2d output size does not follow from its options");
  }
  return ok_status();
}

bool param_shape(const LayerDesc& d, uint8_t role, Shape* shape) {
  if (role == 0) {
    *shape = shape4(d.out.dims[0], d.in.dims[0], d.kernel_h, d.kernel_w);
    return true;
  }
  *shape = shape1(d.out.dims[0]);
  return role == 1 && d.has_bias;
}

void forward(const LayerDesc& d, const LayerArgs& a) {
  conv2d_forward(a.out, a.in, a.w, a.b, geom2d(d), a.n);
}

void backward(const LayerDesc& d, const LayerArgs& a) {
  conv2d_backward(a.din, a.dw, a.db, a.dout, a.in, a.w, geom2d(d), a.n);
}

}  // namespace

const LayerKernel kConv2dKernel = {"conv2d", kReadsInput, check, param_shape, forward, backward};

}  // namespace nmcm
