// What the register-tiled kernels (linear, conv2d) share.
#pragma once

// Fully unrolls a loop over a tile dimension (a template constant), so that the tile's
// accumulators, loaded values and pointers are registers rather than arrays in memory.
#define NMCM_UNROLL _Pragma("GCC unroll 16")
