// Softmax over the features of a 1-D input: y = exp(x - max x) / Σ exp(x - max x).
// Backward: din = y ⊙ (dout - Σ dout ⊙ y). With cross-entropy on the last stage the executor
// skips this backward and seeds the fused gradient (p - onehot)/B instead (see loss.h).
#pragma once

#include <cstdint>

#include "nmcm/layer.h"

namespace nmcm {

void softmax_forward(float* out, const float* in, uint32_t n, uint32_t features);
void softmax_backward(float* din, const float* dout, const float* out, uint32_t n,
                      uint32_t features);

extern const LayerKernel kSoftmaxKernel;

}  // namespace nmcm
