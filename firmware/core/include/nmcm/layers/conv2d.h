// Conv2d: PyTorch's nn.Conv2d with stride and zero padding; no groups, no dilation.
// W shaped [OC, C, KH, KW]; activations [N, C, H, W].
#pragma once

#include <cstdint>

#include "nmcm/layer.h"

namespace nmcm {

void conv2d_forward(float* out, const float* in, const float* w, const float* b, const Geom2d& g,
                    uint32_t n);

// dw += ∂L/∂w, db += ∂L/∂b (may be null), din = ∂L/∂in (may be null).
void conv2d_backward(float* din, float* dw, float* db, const float* dout, const float* in,
                     const float* w, const Geom2d& g, uint32_t n);

extern const LayerKernel kConv2dKernel;

}  // namespace nmcm
