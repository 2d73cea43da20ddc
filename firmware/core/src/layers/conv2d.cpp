#include "nmcm/layers/conv2d.h"

#include <cstddef>

#include "../vec.h"
#include "tile.h"
#include "window.h"

namespace nmcm {
namespace {

// Direct convolution in register tiles, without an im2col buffer (no memory beyond the arena).
//
// The forward pass and, at stride 1, the input gradient are the same loop: an output-stationary
// correlation. A tile of Q output channels × P adjacent output pixels of a row keeps its Q·P sums
// in registers over every input channel and kernel tap, so each loaded input feeds Q multiply-adds
// and each loaded weight P of them (P = 4 for the 3-wide kernel at stride 1, window3_tile; 1 for
// every other kernel and the pixels after the last 4-pixel tile, correlation_tile). Padding is
// handled per row and per tile, never per multiply-add.
//
// The weight gradient is weight-stationary: a tile of Q output channels × T taps of one kernel row
// keeps its Q·T sums in registers over every sample and output pixel.
//
// Sums run in the order of their reduction indices (input channel, then kernel row, then kernel
// column for the correlation; sample, row, column for the weight gradient), the same for every
// tile size.

// Where the weight of (output q, input c, kernel row ky, kernel column kx) is:
// base[q·dq + c·dc + ky·dy + kx·DX], DX being +1 (forward) or −1 (the flipped kernel of the
// input gradient), a template argument so that the walk along a kernel row is a post-increment.
struct Taps {
  const float* base;
  ptrdiff_t dq, dc, dy;
};

// One correlation: out[q][y][x] = init[q] + Σ_{c,ky,kx} in[c][y·sy + ky − py][x·sx + kx − px] ·
// tap(q, c, ky, kx), the sum over the taps whose input lies inside the input planes.
struct Correlation {
  uint32_t channels, h, w;  // input planes
  uint32_t outs, oh, ow;    // output planes
  uint32_t kh, kw, sy, sx;
  int32_t py, px;  // may be negative (the input gradient's padding is kernel − 1 − padding)
};

// One pixel of Q output channels whose first output is `out` and whose first tap's input is `in`,
// over every input channel and the taps [0, nky) × [0, nkx) counted from `taps` (all inside the
// input).
template <int Q, int DX>
void correlation_tile(float* out, size_t out_plane, const float* in, const Correlation& k,
                      const float* taps, const Taps& t, uint32_t nky, uint32_t nkx,
                      const float* init) {
  float acc[Q];
  NMCM_UNROLL for (int q = 0; q < Q; ++q) acc[q] = init ? init[q] : 0.0f;
  const size_t in_plane = size_t{k.h} * k.w;
  for (uint32_t c = 0; c < k.channels; ++c) {
    const float* row = in + c * in_plane;
    const float* trow = taps + c * t.dc;
    for (uint32_t ky = 0; ky < nky; ++ky) {
      const float* x = row;
      const float* tp[Q];
      NMCM_UNROLL for (int q = 0; q < Q; ++q) tp[q] = trow + q * t.dq;
      for (uint32_t kx = 0; kx < nkx; ++kx) {
        const float xv = *x++;
        NMCM_UNROLL for (int q = 0; q < Q; ++q) {
          const float tv = *tp[q];
          tp[q] += DX;
          acc[q] += tv * xv;
        }
      }
      row += k.w;
      trow += t.dy;
    }
  }
  NMCM_UNROLL for (int q = 0; q < Q; ++q) out[q * out_plane] = acc[q];
}

// v clipped to [0, top].
inline uint32_t clip(int32_t v, uint32_t top) {
  return v <= 0 ? 0u : static_cast<uint32_t>(v) < top ? static_cast<uint32_t>(v) : top;
}

// The 3-wide kernel at column stride 1 (most small CNNs): a tile of Q output channels × P
// adjacent pixels reads the P + 2 input columns under it once per input row and takes every
// column tap from registers. Columns outside the input are zeros: only the window's columns
// [jlo, jhi) are read, so the pixels at the image's left and right edges use the same tile as
// the others.
template <int Q, int P, int DX>
void window3_tile(float* out, size_t out_plane, const float* row0, int32_t col0, uint32_t jlo,
                  uint32_t jhi, const Correlation& k, const float* taps, const Taps& t,
                  uint32_t nky, const float* init) {
  constexpr int N = P + 2;
  float acc[Q][P];
  NMCM_UNROLL for (int q = 0; q < Q; ++q) {
    NMCM_UNROLL for (int p = 0; p < P; ++p) acc[q][p] = init ? init[q] : 0.0f;
  }
  const size_t in_plane = size_t{k.h} * k.w;
  const uint32_t span = jhi - jlo;
  for (uint32_t c = 0; c < k.channels; ++c) {
    const float* row = row0 + c * in_plane;
    const float* tq[Q];
    NMCM_UNROLL for (int q = 0; q < Q; ++q) tq[q] = taps + c * t.dc + q * t.dq;
    for (uint32_t ky = 0; ky < nky; ++ky) {
      float xc[N];
      NMCM_UNROLL for (int j = 0; j < N; ++j) {
        xc[j] = static_cast<uint32_t>(j) - jlo < span ? row[col0 + j] : 0.0f;
      }
      NMCM_UNROLL for (int q = 0; q < Q; ++q) {
        NMCM_UNROLL for (int kx = 0; kx < 3; ++kx) {
          const float tv = tq[q][kx * DX];
          NMCM_UNROLL for (int p = 0; p < P; ++p) acc[q][p] += tv * xc[p + kx];
        }
        tq[q] += t.dy;
      }
      row += k.w;
    }
  }
  NMCM_UNROLL for (int q = 0; q < Q; ++q) {
    NMCM_UNROLL for (int p = 0; p < P; ++p) out[q * out_plane + p] = acc[q][p];
  }
}

// One pixel of Q output channels, its taps clipped to the input (any kernel, any stride).
template <int Q, int DX>
void correlation_pixel(float* orow, size_t out_plane, const float* irow, const Correlation& k,
                       const float* trow, const Taps& t, uint32_t nky, uint32_t x,
                       const float* init) {
  const int32_t x0 = static_cast<int32_t>(x * k.sx) - k.px;
  const uint32_t kx0 = x0 < 0 ? static_cast<uint32_t>(-x0) : 0u;
  const uint32_t kx1 = clip(static_cast<int32_t>(k.w) - x0, k.kw);
  if (kx0 >= kx1) {  // no input column under the kernel: the output is its initial value
    NMCM_UNROLL for (int q = 0; q < Q; ++q) orow[q * out_plane + x] = init ? init[q] : 0.0f;
    return;
  }
  correlation_tile<Q, DX>(orow + x, out_plane, irow + (x0 + static_cast<int32_t>(kx0)), k,
                          trow + static_cast<ptrdiff_t>(kx0) * DX, t, nky, kx1 - kx0, init);
}

// One output row of the 3-wide kernel at column stride 1, in tiles of 4 pixels, then single ones
// (correlation_pixel).
template <int Q, int DX>
void window3_row(float* orow, size_t out_plane, const float* irow, const Correlation& k,
                 const float* trow, const Taps& t, uint32_t nky, const float* init) {
  auto run = [&](auto tile, uint32_t x, uint32_t width) {
    const int32_t col0 = static_cast<int32_t>(x) - k.px;  // input column under tap 0 of pixel x
    const int32_t n = static_cast<int32_t>(width) + 2;
    // The window's columns inside the input, [jlo, jhi); the row pointer given points at column
    // jlo, so that it stays inside the input.
    const uint32_t jlo = col0 < 0 ? static_cast<uint32_t>(-col0 < n ? -col0 : n) : 0u;
    const uint32_t jhi = clip(static_cast<int32_t>(k.w) - col0, static_cast<uint32_t>(n));
    const float* base = jhi > jlo ? irow + (col0 + static_cast<int32_t>(jlo)) : irow;
    tile(orow + x, out_plane, base, -static_cast<int32_t>(jlo), jlo, jhi > jlo ? jhi : jlo, k, trow,
         t, nky, init);
  };
  uint32_t x = 0;
  for (; x + 4 <= k.ow; x += 4) run(window3_tile<Q, 4, DX>, x, 4);
  for (; x < k.ow; ++x) correlation_pixel<Q, DX>(orow, out_plane, irow, k, trow, t, nky, x, init);
}

// Output channels [q0, q0 + Q) of one sample.
template <int Q, int DX>
void correlation_channels(float* out, const float* in, const Correlation& k, const Taps& t,
                          uint32_t q0, const float* init) {
  const size_t out_plane = size_t{k.oh} * k.ow;
  const float* taps = t.base + q0 * t.dq;
  out += q0 * out_plane;
  if (init) init += q0;
  for (uint32_t y = 0; y < k.oh; ++y) {
    // Kernel rows whose input row exists: iy = y·sy + ky − py in [0, h).
    const int32_t y0 = static_cast<int32_t>(y * k.sy) - k.py;
    const uint32_t ky0 = y0 < 0 ? static_cast<uint32_t>(-y0) : 0u;
    const uint32_t ky1 = clip(static_cast<int32_t>(k.h) - y0, k.kh);
    float* orow = out + size_t{y} * k.ow;
    if (ky0 >= ky1) {  // no input row under the kernel: the output is its initial value
      for (uint32_t x = 0; x < k.ow; ++x) {
        NMCM_UNROLL for (int q = 0; q < Q; ++q) orow[q * out_plane + x] = init ? init[q] : 0.0f;
      }
      continue;
    }
    const float* irow = in + (static_cast<int32_t>(ky0) + y0) * static_cast<int32_t>(k.w);
    const float* trow = taps + ky0 * t.dy;
    const uint32_t nky = ky1 - ky0;
    if (k.kw == 3 && k.sx == 1) {
      window3_row<Q, DX>(orow, out_plane, irow, k, trow, t, nky, init);
      continue;
    }
    // Other kernels (rarer in small CNNs) take one pixel per tile: less code in flash.
    for (uint32_t x = 0; x < k.ow; ++x) {
      correlation_pixel<Q, DX>(orow, out_plane, irow, k, trow, t, nky, x, init);
    }
  }
}

template <int DX>
void correlate(float* out, const float* in, const Correlation& k, const Taps& t,
               const float* init) {
  uint32_t q = 0;
  for (; q + 4 <= k.outs; q += 4) correlation_channels<4, DX>(out, in, k, t, q, init);
  for (; q < k.outs; ++q) correlation_channels<1, DX>(out, in, k, t, q, init);
}

// dw[q][c][ky][kx0 + j] += g[q][y][x] · in[c][iy][ix] over samples and output pixels, for
// the Q output channels from q and the T kernel columns from kx0 of one kernel row ky.
template <int Q, int T>
void weight_grad_tile(float* dw, const float* dout, const float* in, const Geom2d& g, uint32_t n,
                      uint32_t q, uint32_t c, uint32_t ky, uint32_t kx0) {
  const size_t in_plane = size_t{g.h} * g.w, out_plane = size_t{g.oh} * g.ow;
  const Span rows = valid_span(g.oh, g.h, g.sh, tap_offset(ky, g.ph));
  Span cols[T];
  uint32_t lo = 0, hi = g.ow;  // the columns where all T taps are inside the input
  NMCM_UNROLL for (int j = 0; j < T; ++j) {
    cols[j] = valid_span(g.ow, g.w, g.sw, tap_offset(kx0 + j, g.pw));
    lo = cols[j].lo > lo ? cols[j].lo : lo;
    hi = cols[j].hi < hi ? cols[j].hi : hi;
  }
  if (lo > hi) hi = lo;
  // Each sample's sum over its rows and columns (in order) is added to the gradient so far: micro-
  // batches of any size add up to exactly the whole batch, and a sample's few hundred products
  // are summed apart from the others (a single running sum over the batch loses more precision
  // when the products cancel).
  const size_t taps = size_t{g.kh} * g.kw;
  float* d = dw + (size_t{q} * g.c + c) * taps + size_t{ky} * g.kw + kx0;
  for (uint32_t s = 0; s < n; ++s) {
    float acc[Q][T] = {};
    const float* gs = dout + (size_t{s} * g.oc + q) * out_plane;
    const float* xs = in + (size_t{s} * g.c + c) * in_plane;
    for (uint32_t y = rows.lo; y < rows.hi; ++y) {
      const float* grow = gs + size_t{y} * g.ow;
      const float* xrow = xs + (size_t{y} * g.sh + ky - g.ph) * g.w;
      // Columns one tap reaches and another does not, before and after the common ones.
      auto edges = [&](uint32_t from, uint32_t to) {
        NMCM_UNROLL for (int j = 0; j < T; ++j) {
          const uint32_t a = cols[j].lo > from ? cols[j].lo : from;
          const uint32_t b = cols[j].hi < to ? cols[j].hi : to;
          for (uint32_t x = a; x < b; ++x) {
            const float xv = xrow[size_t{x} * g.sw + kx0 + j - g.pw];
            NMCM_UNROLL for (int qq = 0; qq < Q; ++qq) {
              acc[qq][j] += grow[qq * out_plane + x] * xv;
            }
          }
        }
      };
      edges(0, lo);
      const float* gp[Q];
      NMCM_UNROLL for (int qq = 0; qq < Q; ++qq) gp[qq] = grow + qq * out_plane + lo;
      const float* xp = lo < hi ? xrow + (size_t{lo} * g.sw + kx0 - g.pw) : xrow;
      for (uint32_t x = lo; x < hi; ++x) {
        float xv[T];
        NMCM_UNROLL for (int j = 0; j < T; ++j) xv[j] = xp[j];
        xp += g.sw;
        NMCM_UNROLL for (int qq = 0; qq < Q; ++qq) {
          const float gv = *gp[qq]++;
          NMCM_UNROLL for (int j = 0; j < T; ++j) acc[qq][j] += gv * xv[j];
        }
      }
      edges(hi, g.ow);
    }
    NMCM_UNROLL for (int qq = 0; qq < Q; ++qq) {
      NMCM_UNROLL for (int j = 0; j < T; ++j) d[qq * g.c * taps + j] += acc[qq][j];
    }
  }
}

// The weight gradient of the 3-wide kernel at column stride 1, for the Q output channels from q,
// input channel c and kernel row ky: the three taps of the row are summed together, over groups of
// P adjacent output pixels that read their P + 2 input columns once (for a single pixel, columns
// outside the input are zeros), so each loaded input feeds up to 3·Q multiply-adds and each loaded
// output gradient 3.
template <int Q, int P>
NMCM_TILE_INLINE void weight_grad3_group(float (&acc)[Q][3], const float* const (&gq)[Q],
                                         const float* xrow, int32_t col0, uint32_t w) {
  float xc[P + 2];
  if constexpr (P > 1) {  // a group is formed only where its window is inside the input
    NMCM_UNROLL for (int j = 0; j < P + 2; ++j) xc[j] = xrow[col0 + j];
  } else {
    NMCM_UNROLL for (int j = 0; j < P + 2; ++j) {
      const int32_t col = col0 + j;
      xc[j] = col >= 0 && col < static_cast<int32_t>(w) ? xrow[col] : 0.0f;
    }
  }
  NMCM_UNROLL for (int q = 0; q < Q; ++q) {
    NMCM_UNROLL for (int p = 0; p < P; ++p) {
      const float gv = gq[q][p];
      NMCM_UNROLL for (int kx = 0; kx < 3; ++kx) acc[q][kx] += gv * xc[p + kx];
    }
  }
}

template <int Q>
void weight_grad3_tile(float* dw, const float* dout, const float* in, const Geom2d& g, uint32_t n,
                       uint32_t q, uint32_t c, uint32_t ky) {
  const size_t in_plane = size_t{g.h} * g.w, out_plane = size_t{g.oh} * g.ow;
  const Span rows = valid_span(g.oh, g.h, 1, tap_offset(ky, g.ph));
  const size_t taps = size_t{g.kh} * 3;
  float* d = dw + (size_t{q} * g.c + c) * taps + size_t{ky} * 3;
  for (uint32_t s = 0; s < n; ++s) {
    // Each sample's sum is added to the gradient so far (see weight_grad_tile).
    float acc[Q][3] = {};
    const float* gs = dout + (size_t{s} * g.oc + q) * out_plane;
    const float* xs = in + (size_t{s} * g.c + c) * in_plane;
    for (uint32_t y = rows.lo; y < rows.hi; ++y) {
      const float* xrow = xs + (size_t{y} + ky - g.ph) * g.w;
      const float* gq[Q];
      NMCM_UNROLL for (int qq = 0; qq < Q; ++qq) gq[qq] = gs + qq * out_plane + size_t{y} * g.ow;
      // Groups of 4 pixels where their window is inside the input, single pixels elsewhere.
      const int32_t pw = static_cast<int32_t>(g.pw), w = static_cast<int32_t>(g.w);
      const int32_t ow = static_cast<int32_t>(g.ow);
      for (int32_t x = 0; x < ow;) {
        if (x >= pw && x + 4 <= ow && x - pw + 6 <= w) {
          weight_grad3_group<Q, 4>(acc, gq, xrow, x - pw, g.w);
          NMCM_UNROLL for (int qq = 0; qq < Q; ++qq) gq[qq] += 4;
          x += 4;
        } else {
          weight_grad3_group<Q, 1>(acc, gq, xrow, x - pw, g.w);
          NMCM_UNROLL for (int qq = 0; qq < Q; ++qq)++ gq[qq];
          ++x;
        }
      }
    }
    NMCM_UNROLL for (int qq = 0; qq < Q; ++qq) {
      NMCM_UNROLL for (int kx = 0; kx < 3; ++kx) d[qq * g.c * taps + kx] += acc[qq][kx];
    }
  }
}

template <int Q>
void weight_grad_channels(float* dw, const float* dout, const float* in, const Geom2d& g,
                          uint32_t n, uint32_t q) {
  for (uint32_t c = 0; c < g.c; ++c) {
    for (uint32_t ky = 0; ky < g.kh; ++ky) {
      if (g.kw == 3 && g.sw == 1 && g.sh == 1) {
        weight_grad3_tile<Q>(dw, dout, in, g, n, q, c, ky);
        continue;
      }
      // Other kernels: one tap per tile (less code in flash).
      for (uint32_t kx = 0; kx < g.kw; ++kx)
        weight_grad_tile<Q, 1>(dw, dout, in, g, n, q, c, ky, kx);
    }
  }
}

// The input gradient at a stride above 1, scattered tap by tap (a correlation would visit every
// input position for each tap and find most of them between the strided outputs).
void input_grad_strided(float* din, const float* dout, const float* w, const Geom2d& g,
                        uint32_t n) {
  const size_t in_plane = size_t{g.h} * g.w, out_plane = size_t{g.oh} * g.ow;
  const size_t taps = size_t{g.kh} * g.kw;
  for (uint32_t s = 0; s < n; ++s) {
    for (uint32_t oc = 0; oc < g.oc; ++oc) {
      const float* go = dout + (size_t{s} * g.oc + oc) * out_plane;
      for (uint32_t ic = 0; ic < g.c; ++ic) {
        const float* wk = w + (size_t{oc} * g.c + ic) * taps;
        float* dx = din + (size_t{s} * g.c + ic) * in_plane;
        for (uint32_t ky = 0; ky < g.kh; ++ky) {
          const Span rows = valid_span(g.oh, g.h, g.sh, tap_offset(ky, g.ph));
          for (uint32_t kx = 0; kx < g.kw; ++kx) {
            const Span cols = valid_span(g.ow, g.w, g.sw, tap_offset(kx, g.pw));
            const float wv = wk[ky * g.kw + kx];
            for (uint32_t oy = rows.lo; oy < rows.hi; ++oy) {
              const float* grow = go + size_t{oy} * g.ow;
              float* dxrow = dx + (size_t{oy} * g.sh + ky - g.ph) * g.w + kx - g.pw;
              for (uint32_t x = cols.lo; x < cols.hi; ++x) dxrow[size_t{x} * g.sw] += wv * grow[x];
            }
          }
        }
      }
    }
  }
}

}  // namespace

void conv2d_forward(float* out, const float* in, const float* w, const float* b, const Geom2d& g,
                    uint32_t n) {
  const Correlation k{g.c,
                      g.h,
                      g.w,
                      g.oc,
                      g.oh,
                      g.ow,
                      g.kh,
                      g.kw,
                      g.sh,
                      g.sw,
                      static_cast<int32_t>(g.ph),
                      static_cast<int32_t>(g.pw)};
  const ptrdiff_t taps = static_cast<ptrdiff_t>(g.kh * g.kw);
  const Taps t{w, static_cast<ptrdiff_t>(g.c) * taps, taps, static_cast<ptrdiff_t>(g.kw)};
  const size_t in_sample = size_t{g.c} * g.h * g.w, out_sample = size_t{g.oc} * g.oh * g.ow;
  for (uint32_t s = 0; s < n; ++s) correlate<1>(out + s * out_sample, in + s * in_sample, k, t, b);
}

void conv2d_backward(float* din, float* dw, float* db, const float* dout, const float* in,
                     const float* w, const Geom2d& g, uint32_t n) {
  const size_t in_sample = size_t{g.c} * g.h * g.w, out_plane = size_t{g.oh} * g.ow;
  if (db) {
    for (uint32_t s = 0; s < n; ++s) {
      for (uint32_t oc = 0; oc < g.oc; ++oc) {
        db[oc] +=
            vec::sum(dout + (size_t{s} * g.oc + oc) * out_plane, static_cast<uint32_t>(out_plane));
      }
    }
  }
  uint32_t q = 0;
  for (; q + 4 <= g.oc; q += 4) weight_grad_channels<4>(dw, dout, in, g, n, q);
  for (; q < g.oc; ++q) weight_grad_channels<1>(dw, dout, in, g, n, q);
  if (!din) return;
  if (g.sh != 1 || g.sw != 1) {
    vec::fill(din, 0.0f, static_cast<uint32_t>(n * in_sample));
    input_grad_strided(din, dout, w, g, n);
    return;
  }
  // At stride 1 the input gradient is the correlation of the output gradient with the flipped
  // kernel, its channels swapped, padded by kernel − 1 − padding.
  const Correlation k{g.oc,
                      g.oh,
                      g.ow,
                      g.c,
                      g.h,
                      g.w,
                      g.kh,
                      g.kw,
                      1,
                      1,
                      static_cast<int32_t>(g.kh) - 1 - static_cast<int32_t>(g.ph),
                      static_cast<int32_t>(g.kw) - 1 - static_cast<int32_t>(g.pw)};
  const ptrdiff_t taps = static_cast<ptrdiff_t>(g.kh * g.kw);
  const Taps t{w + taps - 1, taps, static_cast<ptrdiff_t>(g.c) * taps,
               -static_cast<ptrdiff_t>(g.kw)};
  const size_t out_sample = size_t{g.oc} * out_plane;
  for (uint32_t s = 0; s < n; ++s) {
    correlate<-1>(din + s * in_sample, dout + s * out_sample, k, t, nullptr);
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
