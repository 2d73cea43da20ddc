// Stochastic gradient descent exactly as torch.optim.SGD (dampening 0, no Nesterov):
//   d   = g + weight_decay · w              (only if weight_decay != 0)
//   buf = momentum · buf + d                (only if momentum != 0)
//   w   = w - lr · buf   (or w - lr · d without momentum)
// torch sets buf = d on the first step; starting buf at 0 gives the same value bit for bit
// (momentum · 0 + d == d), so the executor zeroes momentum buffers at load.
#pragma once

#include <cstdint>

namespace nmcm {

// `buf` may be null when momentum == 0.
void sgd_update(float* w, const float* g, float* buf, uint32_t count, float lr, float momentum,
                float weight_decay);

}  // namespace nmcm
