#include "nmcm/layers/flatten.h"

namespace nmcm {

void flatten_forward(float* out, const float* in, uint32_t count) {
  if (out == in) return;
  for (uint32_t i = 0; i < count; ++i) out[i] = in[i];
}

void flatten_backward(float* din, const float* dout, uint32_t count) {
  if (din == dout) return;
  for (uint32_t i = 0; i < count; ++i) din[i] = dout[i];
}

namespace {

Status check(const LayerDesc& d) {
  if (d.out.rank != 1 || d.out.dims[0] != d.in.numel()) {
    return error(StatusCode::kMalformed, "flatten output is not the input's element count");
  }
  if (d.kernel_h | d.kernel_w | d.stride_h | d.stride_w | d.pad_h | d.pad_w) {
    return error(StatusCode::kMalformed, "flatten has no kernel, stride or padding");
  }
  return ok_status();
}

bool param_shape(const LayerDesc&, uint8_t, Shape*) { return false; }

uint32_t count(const LayerDesc& d, const LayerArgs& a) {
  return static_cast<uint32_t>(d.in.numel()) * a.n;
}

void forward(const LayerDesc& d, const LayerArgs& a) { flatten_forward(a.out, a.in, count(d, a)); }

void backward(const LayerDesc& d, const LayerArgs& a) {
  if (a.din) flatten_backward(a.din, a.dout, count(d, a));
}

}  // namespace

const LayerKernel kFlattenKernel = {"flatten", 0, check, param_shape, forward, backward};

}  // namespace nmcm
