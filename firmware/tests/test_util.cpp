#include "test_util.h"

#include <cmath>
#include <fstream>
#include <iterator>
#include <stdexcept>

namespace nmcm::test {

std::vector<uint8_t> golden(const std::string& name) {
  const std::string path = std::string(NMCM_TEST_DATA_DIR) + "/" + name + ".blob";
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<float> random_floats(std::mt19937& rng, size_t n, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

double rel_err(const float* a, const double* b, size_t n) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < n; ++i) {
    diff = std::fmax(diff, std::fabs(static_cast<double>(a[i]) - b[i]));
    scale = std::fmax(scale, std::fabs(b[i]));
  }
  return scale > 0 ? diff / scale : diff;
}

double rel_err(const float* a, const float* b, size_t n) {
  std::vector<double> wide(b, b + n);
  return rel_err(a, wide.data(), n);
}

}  // namespace nmcm::test
