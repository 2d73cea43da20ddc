// Tensors are views: a pointer into the arena (or the blob) plus a shape. Nothing here owns memory.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nmcm {

// Up to four dimensions; unused trailing dimensions are 1 (as in the blob's tables).
struct Shape {
  uint32_t dims[4];
  uint8_t rank;

  // Elements, in 64 bits so that a hostile blob cannot overflow it.
  uint64_t numel() const {
    uint64_t n = 1;
    for (uint8_t i = 0; i < rank; ++i) n *= dims[i];
    return n;
  }
  bool operator==(const Shape& o) const {
    if (rank != o.rank) return false;
    for (uint8_t i = 0; i < rank; ++i) {
      if (dims[i] != o.dims[i]) return false;
    }
    return true;
  }
  bool operator!=(const Shape& o) const { return !(*this == o); }
};

constexpr Shape shape1(uint32_t a) { return Shape{{a, 1, 1, 1}, 1}; }
constexpr Shape shape2(uint32_t a, uint32_t b) { return Shape{{a, b, 1, 1}, 2}; }
constexpr Shape shape3(uint32_t a, uint32_t b, uint32_t c) { return Shape{{a, b, c, 1}, 3}; }
constexpr Shape shape4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  return Shape{{a, b, c, d}, 4};
}

// Index of the first NaN or infinity among data[0..n), or n if every value is finite. By the bit
// pattern (all exponent bits set), so that it holds whatever the compiler's float options.
inline uint32_t first_non_finite(const float* data, uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t bits;
    __builtin_memcpy(&bits, data + i, sizeof bits);
    if ((bits & 0x7F800000u) == 0x7F800000u) return i;
  }
  return n;
}

struct TensorView {
  float* data;
  Shape shape;
  uint32_t count() const { return static_cast<uint32_t>(shape.numel()); }
};

}  // namespace nmcm
