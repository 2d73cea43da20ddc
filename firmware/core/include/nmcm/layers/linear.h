// Linear: y = x Wᵀ + b, W shaped [OUT, IN] (PyTorch's nn.Linear).
#pragma once

#include <cstdint>

#include "nmcm/layer.h"

namespace nmcm {

// out[N, OUT] = in[N, IN] · w[OUT, IN]ᵀ + b[OUT] (b may be null); every size at least 1 (the blob
// loader refuses a zero dimension).
void linear_forward(float* out, const float* in, const float* w, const float* b, uint32_t n,
                    uint32_t in_features, uint32_t out_features);

// dw += doutᵀ·in, db += Σ_n dout (db may be null), din = dout·w (din may be null).
void linear_backward(float* din, float* dw, float* db, const float* dout, const float* in,
                     const float* w, uint32_t n, uint32_t in_features, uint32_t out_features);

extern const LayerKernel kLinearKernel;

}  // namespace nmcm
