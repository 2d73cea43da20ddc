// MaxPool2d: PyTorch's nn.MaxPool2d (floor mode, no dilation). Padding counts as -inf, i.e. a
// window only looks at real input positions. The gradient goes to the first maximum of each window
// in row-major order (PyTorch's CPU kernel: a later element wins only if strictly greater, or NaN),
// and adds up where windows overlap. No indices are stored: backward recomputes them from the
// stashed input.
#pragma once

#include <cstdint>

#include "nmcm/layer.h"

namespace nmcm {

void maxpool2d_forward(float* out, const float* in, const Geom2d& g, uint32_t n);
void maxpool2d_backward(float* din, const float* dout, const float* in, const Geom2d& g,
                        uint32_t n);

extern const LayerKernel kMaxPool2dKernel;

}  // namespace nmcm
