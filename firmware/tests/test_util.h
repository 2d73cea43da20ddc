// Shared helpers of the unit tests.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "nmcm/layer.h"
#include "nmcm/stage.h"

namespace nmcm::test {

// A golden blob of tests/data (written by the model compiler, see make_golden_blobs.py).
std::vector<uint8_t> golden(const std::string& name);

// A 16-byte aligned arena on the heap of the test (the core itself never allocates).
struct Arena {
  explicit Arena(size_t bytes) : storage(bytes + 16) {}
  uint8_t* data() {
    const uintptr_t p = reinterpret_cast<uintptr_t>(storage.data());
    return storage.data() + ((16 - p % 16) % 16);
  }
  size_t size() const { return storage.size() - 16; }
  std::vector<uint8_t> storage;
};

std::vector<float> random_floats(std::mt19937& rng, size_t n, float scale = 1.0f);

// max|a - b| / max|b| over two float arrays.
double rel_err(const float* a, const double* b, size_t n);
double rel_err(const float* a, const float* b, size_t n);

// The definitions, in double precision: what the kernels are checked against.
struct Reference {
  std::vector<double> y, dx, dw, db;  // output, input gradient, weight and bias gradients
};

// nn.Linear on n samples: y = x·wᵀ + b, and the gradients of dy.
Reference linear_reference(const std::vector<float>& x, const std::vector<float>& w,
                           const std::vector<float>& b, const std::vector<float>& dy, uint32_t n,
                           uint32_t in, uint32_t out);

// nn.Conv2d on n samples (zero padding), and the gradients of dy.
Reference conv2d_reference(const Geom2d& g, uint32_t n, const std::vector<float>& x,
                           const std::vector<float>& w, const std::vector<float>& b,
                           const std::vector<float>& dy);

}  // namespace nmcm::test
