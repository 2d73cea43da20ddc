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

Reference linear_reference(const std::vector<float>& x, const std::vector<float>& w,
                           const std::vector<float>& b, const std::vector<float>& dy, uint32_t n,
                           uint32_t in, uint32_t out) {
  Reference r{std::vector<double>(size_t{n} * out), std::vector<double>(size_t{n} * in, 0.0),
              std::vector<double>(size_t{out} * in, 0.0), std::vector<double>(out, 0.0)};
  for (uint32_t s = 0; s < n; ++s) {
    for (uint32_t o = 0; o < out; ++o) {
      double acc = b[o];
      for (uint32_t i = 0; i < in; ++i) {
        acc += double{x[s * in + i]} * w[o * in + i];
        r.dx[s * in + i] += double{dy[s * out + o]} * w[o * in + i];
        r.dw[o * in + i] += double{dy[s * out + o]} * x[s * in + i];
      }
      r.y[s * out + o] = acc;
      r.db[o] += dy[s * out + o];
    }
  }
  return r;
}

Reference conv2d_reference(const Geom2d& g, uint32_t n, const std::vector<float>& x,
                           const std::vector<float>& w, const std::vector<float>& b,
                           const std::vector<float>& dy) {
  Reference r{std::vector<double>(dy.size()), std::vector<double>(x.size(), 0.0),
              std::vector<double>(w.size(), 0.0), std::vector<double>(g.oc, 0.0)};
  for (uint32_t s = 0; s < n; ++s) {
    for (uint32_t o = 0; o < g.oc; ++o) {
      for (uint32_t oy = 0; oy < g.oh; ++oy) {
        for (uint32_t ox = 0; ox < g.ow; ++ox) {
          const size_t yi = ((size_t{s} * g.oc + o) * g.oh + oy) * g.ow + ox;
          double acc = b[o];
          for (uint32_t ic = 0; ic < g.c; ++ic) {
            for (uint32_t ky = 0; ky < g.kh; ++ky) {
              for (uint32_t kx = 0; kx < g.kw; ++kx) {
                const int64_t iy = int64_t{oy} * g.sh + ky - g.ph;
                const int64_t ix = int64_t{ox} * g.sw + kx - g.pw;
                if (iy < 0 || ix < 0 || iy >= g.h || ix >= g.w) continue;  // zero padding
                const size_t xi = ((size_t{s} * g.c + ic) * g.h + iy) * g.w + ix;
                const size_t wi = ((size_t{o} * g.c + ic) * g.kh + ky) * g.kw + kx;
                acc += double{x[xi]} * w[wi];
                r.dx[xi] += double{dy[yi]} * w[wi];
                r.dw[wi] += double{dy[yi]} * x[xi];
              }
            }
          }
          r.y[yi] = acc;
          r.db[o] += dy[yi];
        }
      }
    }
  }
  return r;
}

}  // namespace nmcm::test
