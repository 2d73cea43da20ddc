// ReLU: y = max(x, 0). Backward uses the output, as PyTorch does: din = dout where y > 0, else 0.
// The buffers of one call must not overlap.
#pragma once

#include <cstdint>

#include "nmcm/layer.h"

namespace nmcm {

void relu_forward(float* out, const float* in, uint32_t count);
void relu_backward(float* din, const float* dout, const float* out, uint32_t count);

extern const LayerKernel kReluKernel;

}  // namespace nmcm
