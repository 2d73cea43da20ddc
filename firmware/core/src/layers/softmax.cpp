#include "nmcm/layers/softmax.h"

#include <cmath>
#include <cstddef>

#include "../vec.h"

namespace nmcm {

void softmax_forward(float* out, const float* in, uint32_t n, uint32_t features) {
  for (uint32_t s = 0; s < n; ++s) {
    const float* x = in + size_t{s} * features;
    float* y = out + size_t{s} * features;
    float max = x[0];
    for (uint32_t i = 1; i < features; ++i) max = x[i] > max ? x[i] : max;
    float total = 0.0f;
    for (uint32_t i = 0; i < features; ++i) {
      y[i] = std::exp(x[i] - max);
      total += y[i];
    }
    // One division, then products, as PyTorch's CPU kernel does.
    const float inv = 1.0f / total;
    for (uint32_t i = 0; i < features; ++i) y[i] *= inv;
  }
}

void softmax_backward(float* din, const float* dout, const float* out, uint32_t n,
                      uint32_t features) {
  for (uint32_t s = 0; s < n; ++s) {
    const float* g = dout + size_t{s} * features;
    const float* y = out + size_t{s} * features;
    float* dx = din + size_t{s} * features;
    const float gy = vec::dot(g, y, features);
    for (uint32_t i = 0; i < features; ++i) dx[i] = y[i] * (g[i] - gy);
  }
}

namespace {

Status check(const LayerDesc& d) {
  if (d.in.rank != 1 || d.out != d.in) {
    return error(StatusCode::kMalformed, "softmax needs a 1-D input and an output of its shape");
  }
  if (d.kernel_h | d.kernel_w | d.stride_h | d.stride_w | d.pad_h | d.pad_w) {
    return error(StatusCode::kMalformed, "softmax has no kernel, stride or padding");
  }
  return ok_status();
}

bool param_shape(const LayerDesc&, uint8_t, Shape*) { return false; }

void forward(const LayerDesc& d, const LayerArgs& a) {
  softmax_forward(a.out, a.in, a.n, d.in.dims[0]);
}

void backward(const LayerDesc& d, const LayerArgs& a) {
  if (a.din) softmax_backward(a.din, a.dout, a.out, a.n, d.in.dims[0]);
}

}  // namespace

const LayerKernel kSoftmaxKernel = {"softmax", kReadsOutput, check, param_shape, forward, backward};

}  // namespace nmcm
