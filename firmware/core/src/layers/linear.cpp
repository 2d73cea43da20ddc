#include "nmcm/layers/linear.h"

#include <cstddef>

#include "../vec.h"

namespace nmcm {

void linear_forward(float* out, const float* in, const float* w, const float* b, uint32_t n,
                    uint32_t in_features, uint32_t out_features) {
  for (uint32_t s = 0; s < n; ++s) {
    const float* x = in + size_t{s} * in_features;
    float* y = out + size_t{s} * out_features;
    for (uint32_t o = 0; o < out_features; ++o) {
      const float acc = vec::dot(x, w + size_t{o} * in_features, in_features);
      y[o] = b ? acc + b[o] : acc;
    }
  }
}

void linear_backward(float* din, float* dw, float* db, const float* dout, const float* in,
                     const float* w, uint32_t n, uint32_t in_features, uint32_t out_features) {
  for (uint32_t s = 0; s < n; ++s) {
    const float* g = dout + size_t{s} * out_features;
    const float* x = in + size_t{s} * in_features;
    if (db) {
      for (uint32_t o = 0; o < out_features; ++o) db[o] += g[o];
    }
    for (uint32_t o = 0; o < out_features; ++o) {
      vec::axpy(dw + size_t{o} * in_features, x, g[o], in_features);
    }
    if (din) {
      float* dx = din + size_t{s} * in_features;
      vec::fill(dx, 0.0f, in_features);
      for (uint32_t o = 0; o < out_features; ++o) {
        vec::axpy(dx, w + size_t{o} * in_features, g[o], in_features);
      }
    }
  }
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
