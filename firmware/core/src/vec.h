// Inner loops shared by the kernels. They are written so that the compiler vectorizes them
// (contiguous, restrict, `omp simd` for reductions: -fopenmp-simd allows reordering only these
// sums, not the whole program as -ffast-math would).
#pragma once

#include <cstdint>

namespace nmcm {
namespace vec {

inline float dot(const float* __restrict a, const float* __restrict b, uint32_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (uint32_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

inline float sum(const float* __restrict a, uint32_t n) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (uint32_t i = 0; i < n; ++i) acc += a[i];
  return acc;
}

// y += alpha · x
inline void axpy(float* __restrict y, const float* __restrict x, float alpha, uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

inline void fill(float* y, float value, uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) y[i] = value;
}

}  // namespace vec
}  // namespace nmcm
