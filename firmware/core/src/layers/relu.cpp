#include "nmcm/layers/relu.h"

#include <cstddef>

namespace nmcm {

// Buffers never alias (the memory plan keeps them apart); restrict lets the selects vectorize.

void relu_forward(float* __restrict out, const float* __restrict in, uint32_t count) {
  // `x < 0 ? 0 : x` rather than `x > 0 ? x : 0`: NaN passes through, as in torch.relu.
  for (uint32_t i = 0; i < count; ++i) out[i] = in[i] < 0.0f ? 0.0f : in[i];
}

void relu_backward(float* __restrict din, const float* __restrict dout, const float* __restrict out,
                   uint32_t count) {
  // torch's threshold_backward(grad, result, 0): zero where result <= 0. dout is read
  // unconditionally so that the select vectorizes (a conditional load would not).
  for (uint32_t i = 0; i < count; ++i) {
    const float g = dout[i];
    din[i] = out[i] <= 0.0f ? 0.0f : g;
  }
}

namespace {

Status check(const LayerDesc& d) {
  if (d.out != d.in) return error(StatusCode::kMalformed, "relu output shape differs from input");
  if (d.kernel_h | d.kernel_w | d.stride_h | d.stride_w | d.pad_h | d.pad_w) {
    return error(StatusCode::kMalformed, "relu has no kernel, stride or padding");
  }
  return ok_status();
}

bool param_shape(const LayerDesc&, uint8_t, Shape*) { return false; }

uint32_t count(const LayerDesc& d, const LayerArgs& a) {
  return static_cast<uint32_t>(d.in.numel()) * a.n;
}

void forward(const LayerDesc& d, const LayerArgs& a) { relu_forward(a.out, a.in, count(d, a)); }

void backward(const LayerDesc& d, const LayerArgs& a) {
  if (a.din) relu_backward(a.din, a.dout, a.out, count(d, a));
}

}  // namespace

const LayerKernel kReluKernel = {"relu", kReadsOutput, check, param_shape, forward, backward};

}  // namespace nmcm
