// Index arithmetic shared by conv2d and maxpool2d.
#pragma once

#include <cstdint>

namespace nmcm {

// The outputs o in [lo, hi) whose input position o·stride + offset lies inside [0, size):
// for a kernel tap k with padding p, offset = k - p. Lets the inner loops run without bounds tests.
struct Span {
  uint32_t lo, hi;
  uint32_t len() const { return hi - lo; }
};

// Input position of kernel tap k of output 0, relative to the unpadded input.
inline int32_t tap_offset(uint32_t k, uint32_t pad) {
  return static_cast<int32_t>(k) - static_cast<int32_t>(pad);
}

// 32-bit arithmetic suffices (the loader bounds every dimension by 2^30 and options by 2^16) and
// divides in one instruction on Cortex-M, where 64-bit division is a library call.
inline Span valid_span(uint32_t out_len, uint32_t size, uint32_t stride, int32_t offset) {
  const int32_t s = static_cast<int32_t>(stride);
  const int32_t lo = offset >= 0 ? 0 : (-offset + s - 1) / s;
  const int32_t top = static_cast<int32_t>(size) - 1 - offset;
  const uint32_t hi_raw = top < 0 ? 0u : static_cast<uint32_t>(top / s) + 1u;
  const uint32_t hi = hi_raw > out_len ? out_len : hi_raw;
  return static_cast<uint32_t>(lo) >= hi ? Span{0, 0} : Span{static_cast<uint32_t>(lo), hi};
}

}  // namespace nmcm
