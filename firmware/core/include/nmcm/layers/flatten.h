// Flatten: [C, H, W] -> [C*H*W]. The memory plan gives its output the storage of its input
// (docs/blob-format.md), so in a stage it moves no data; the functions copy only when called
// with distinct buffers.
#pragma once

#include <cstdint>

#include "nmcm/layer.h"

namespace nmcm {

void flatten_forward(float* out, const float* in, uint32_t count);
void flatten_backward(float* din, const float* dout, uint32_t count);

extern const LayerKernel kFlattenKernel;

}  // namespace nmcm
