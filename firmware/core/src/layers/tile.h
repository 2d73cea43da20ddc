// What the register-tiled kernels (linear, conv2d) share.
#pragma once

// Fully unrolls a loop over a tile dimension (a template constant), so that the tile's
// accumulators, loaded values and pointers are registers rather than arrays in memory.
#define NMCM_UNROLL _Pragma("GCC unroll 16")

// A tile helper that takes its caller's accumulators by reference: inlined, so that they stay in
// registers (a call would force them into memory).
#define NMCM_TILE_INLINE __attribute__((always_inline)) inline
