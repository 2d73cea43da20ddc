#include "nmcm/layers/linear.h"

#include <cstddef>

#include "tile.h"

namespace nmcm {
namespace {

// The three products of a linear layer, each computed in register tiles: a tile of R×C results
// lives in registers for the reduction, so every loaded input feeds C multiply-adds and every
// loaded weight R of them (on a Cortex-M4F: R + C loads for R·C fused multiply-adds, instead of two
// loads and a store per multiply-add). The edges of a matrix take smaller tiles of the same code.
// Every result is summed in the same order whatever the size of its tile, so the figures do not
// depend on where a tile boundary falls.

constexpr uint32_t kBlock = 16;

// y[s][o] = b[o] + Σ_i x[s][i]·w[o][i] for the R samples from s and the C outputs from o.
template <int R, int C>
void forward_tile(float* y, const float* x, const float* w, const float* b, uint32_t in_f,
                  uint32_t out_f) {
  const float* xs[R];
  const float* ws[C];
  NMCM_UNROLL for (int r = 0; r < R; ++r) xs[r] = x + size_t{in_f} * r;
  NMCM_UNROLL for (int c = 0; c < C; ++c) ws[c] = w + size_t{in_f} * c;
  // Blocks of kBlock inputs are summed apart and the block sums added up in the output: a sum of
  // a few hundred products keeps the precision of a blocked (vectorized) dot product rather than
  // losing it the way one long running sum does.
  for (uint32_t i0 = 0; i0 < in_f; i0 += kBlock) {
    const uint32_t end = in_f - i0 < kBlock ? in_f : i0 + kBlock;
    float acc[R][C] = {};
    for (uint32_t i = i0; i < end; ++i) {
      float xv[R];
      NMCM_UNROLL for (int r = 0; r < R; ++r) xv[r] = *xs[r]++;
      NMCM_UNROLL for (int c = 0; c < C; ++c) {
        const float wv = *ws[c]++;
        NMCM_UNROLL for (int r = 0; r < R; ++r) acc[r][c] += xv[r] * wv;
      }
    }
    NMCM_UNROLL for (int r = 0; r < R; ++r) {
      NMCM_UNROLL for (int c = 0; c < C; ++c) {
        float& out = y[size_t{out_f} * r + c];
        out = i0 == 0 ? acc[r][c] : out + acc[r][c];
      }
    }
  }
  if (b) {
    NMCM_UNROLL for (int r = 0; r < R; ++r) {
      NMCM_UNROLL for (int c = 0; c < C; ++c) y[size_t{out_f} * r + c] += b[c];
    }
  }
}

// dw[o][i] += g[s][o]·x[s][i] for each sample s in turn, for the R outputs from o and the C inputs
// from i.
template <int R, int C>
void weight_grad_tile(float* dw, const float* g, const float* x, uint32_t n, uint32_t in_f,
                      uint32_t out_f) {
  // The sums start from the gradient so far and take the samples in order: the same roundings as
  // adding sample by sample, so micro-batches of any size add up to exactly the whole batch.
  float acc[R][C];
  NMCM_UNROLL for (int r = 0; r < R; ++r) {
    NMCM_UNROLL for (int c = 0; c < C; ++c) acc[r][c] = dw[size_t{in_f} * r + c];
  }
  for (uint32_t s = 0; s < n; ++s) {
    float gv[R], xv[C];
    NMCM_UNROLL for (int r = 0; r < R; ++r) gv[r] = g[r];
    NMCM_UNROLL for (int c = 0; c < C; ++c) xv[c] = x[c];
    NMCM_UNROLL for (int r = 0; r < R; ++r) {
      NMCM_UNROLL for (int c = 0; c < C; ++c) acc[r][c] += gv[r] * xv[c];
    }
    g += out_f;
    x += in_f;
  }
  NMCM_UNROLL for (int r = 0; r < R; ++r) {
    NMCM_UNROLL for (int c = 0; c < C; ++c) dw[size_t{in_f} * r + c] = acc[r][c];
  }
}

// dx[s][i] = Σ_o g[s][o]·w[o][i] for the R samples from s and the C inputs from i.
template <int R, int C>
void input_grad_tile(float* dx, const float* g, const float* w, uint32_t in_f, uint32_t out_f) {
  float acc[R][C] = {};
  for (uint32_t o = 0; o < out_f; ++o) {
    float gv[R], wv[C];
    NMCM_UNROLL for (int r = 0; r < R; ++r) gv[r] = g[size_t{out_f} * r + o];
    NMCM_UNROLL for (int c = 0; c < C; ++c) wv[c] = w[c];
    NMCM_UNROLL for (int r = 0; r < R; ++r) {
      NMCM_UNROLL for (int c = 0; c < C; ++c) acc[r][c] += gv[r] * wv[c];
    }
    w += in_f;
  }
  NMCM_UNROLL for (int r = 0; r < R; ++r) {
    NMCM_UNROLL for (int c = 0; c < C; ++c) dx[size_t{in_f} * r + c] = acc[r][c];
  }
}

// Walks a rows × cols grid in tiles of RB × CB, then the edges in tiles of one row or one column.
// `tile.run<R, C>(r, c)` computes the tile of R × C results at (r, c).
template <int RB, int CB, typename Tile>
void tiles(uint32_t rows, uint32_t cols, Tile tile) {
  uint32_t r = 0;
  for (; r + RB <= rows; r += RB) {
    uint32_t c = 0;
    for (; c + CB <= cols; c += CB) tile.template run<RB, CB>(r, c);
    for (; c < cols; ++c) tile.template run<RB, 1>(r, c);
  }
  for (; r < rows; ++r) {
    uint32_t c = 0;
    for (; c + CB <= cols; c += CB) tile.template run<1, CB>(r, c);
    for (; c < cols; ++c) tile.template run<1, 1>(r, c);
  }
}

struct Forward {
  float* y;
  const float *x, *w, *b;
  uint32_t in_f, out_f;
  template <int R, int C>
  void run(uint32_t s, uint32_t o) const {
    forward_tile<R, C>(y + size_t{s} * out_f + o, x + size_t{s} * in_f, w + size_t{o} * in_f,
                       b ? b + o : nullptr, in_f, out_f);
  }
};

struct WeightGrad {
  float* dw;
  const float *g, *x;
  uint32_t n, in_f, out_f;
  template <int R, int C>
  void run(uint32_t o, uint32_t i) const {
    weight_grad_tile<R, C>(dw + size_t{o} * in_f + i, g + o, x + i, n, in_f, out_f);
  }
};

struct InputGrad {
  float* dx;
  const float *g, *w;
  uint32_t in_f, out_f;
  template <int R, int C>
  void run(uint32_t s, uint32_t i) const {
    input_grad_tile<R, C>(dx + size_t{s} * in_f + i, g + size_t{s} * out_f, w + i, in_f, out_f);
  }
};

}  // namespace

void linear_forward(float* out, const float* in, const float* w, const float* b, uint32_t n,
                    uint32_t in_features, uint32_t out_features) {
  tiles<4, 4>(n, out_features, Forward{out, in, w, b, in_features, out_features});
}

void linear_backward(float* din, float* dw, float* db, const float* dout, const float* in,
                     const float* w, uint32_t n, uint32_t in_features, uint32_t out_features) {
  if (db) {
    for (uint32_t o = 0; o < out_features; ++o) {
      float acc = db[o];
      for (uint32_t s = 0; s < n; ++s) acc += dout[size_t{s} * out_features + o];
      db[o] = acc;
    }
  }
  tiles<4, 4>(out_features, in_features, WeightGrad{dw, dout, in, n, in_features, out_features});
  if (din) tiles<4, 4>(n, in_features, InputGrad{din, dout, w, in_features, out_features});
}

namespace {

Status check(const LayerDesc& d) {
  if (d.in.rank != 1 || d.out.rank != 1) {
    return error(StatusCode::kMalformed, "linear needs a 1-D input and output");
  }
  if (d.kernel_h | d.kernel_w | d.stride_h | d.stride_w | d.pad_h | d.pad_w) {
    return error(StatusCode::kMalformed, "linear has no kernel, stride or padding");
  }
  return ok_status();
}

bool param_shape(const LayerDesc& d, uint8_t role, Shape* shape) {
  if (role == 0) {
    *shape = shape2(d.out.dims[0], d.in.dims[0]);
    return true;
  }
  *shape = shape1(d.out.dims[0]);
  return role == 1 && d.has_bias;
}

void forward(const LayerDesc& d, const LayerArgs& a) {
  linear_forward(a.out, a.in, a.w, a.b, a.n, d.in.dims[0], d.out.dims[0]);
}

void backward(const LayerDesc& d, const LayerArgs& a) {
  linear_backward(a.din, a.dw, a.db, a.dout, a.in, a.w, a.n, d.in.dims[0], d.out.dims[0]);
}

}  // namespace

const LayerKernel kLinearKernel = {"linear", kReadsInput, check, param_shape, forward, backward};

}  // namespace nmcm
