// The register-tiled kernels over sampled shapes: every geometry takes a different mix of full
// tiles, edge tiles and image borders, so each test draws a few hundred of them from a fixed seed
// and checks the kernel against a double-precision reference written from the definition, and the
// gradient accumulation against micro-batch splits (which must give exactly the same bits).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "nmcm/layers/conv2d.h"
#include "nmcm/layers/linear.h"
#include "nmcm/layers/maxpool2d.h"
#include "test_util.h"

namespace nmcm {
namespace {

using test::rel_err;
constexpr double kTol = 1e-5;
constexpr int kSamples = 300;

uint32_t draw(std::mt19937& rng, uint32_t lo, uint32_t hi) {
  return std::uniform_int_distribution<uint32_t>(lo, hi)(rng);
}

std::string describe(const Geom2d& g, uint32_t n) {
  std::ostringstream os;
  os << "n" << n << " c" << g.c << " " << g.h << "x" << g.w << " oc" << g.oc << " k" << g.kh << "x"
     << g.kw << " s" << g.sh << "x" << g.sw << " p" << g.ph << "x" << g.pw;
  return os.str();
}

// A geometry with at least one output position. Convolutions may pad by more than the kernel
// (whole output rows and columns then see only padding); pooling clips the padding afterwards.
Geom2d draw_geometry(std::mt19937& rng, uint32_t max_channels) {
  for (;;) {
    Geom2d g{};
    g.c = draw(rng, 1, max_channels);
    g.h = draw(rng, 1, 12);
    g.w = draw(rng, 1, 12);
    g.oc = draw(rng, 1, 9);
    g.kh = draw(rng, 1, 5);
    g.kw = draw(rng, 1, 5);
    if (draw(rng, 0, 2) == 0) g.kh = g.kw = 3;  // the common kernel has its own code
    g.sh = draw(rng, 1, 3);
    g.sw = draw(rng, 1, 3);
    if (draw(rng, 0, 1) == 0) g.sh = g.sw = 1;
    g.ph = draw(rng, 0, g.kh);
    g.pw = draw(rng, 0, g.kw);
    if (g.h + 2 * g.ph < g.kh || g.w + 2 * g.pw < g.kw) continue;
    g.oh = window_out(g.h, g.kh, g.sh, g.ph);
    g.ow = window_out(g.w, g.kw, g.sw, g.pw);
    return g;
  }
}

TEST(Conv2dProperty, SampledGeometriesMatchTheDefinition) {
  std::mt19937 rng(11);
  for (int i = 0; i < kSamples; ++i) {
    const Geom2d g = draw_geometry(rng, 6);
    const uint32_t n = draw(rng, 1, 3);
    SCOPED_TRACE(describe(g, n));
    const size_t nx = size_t{n} * g.c * g.h * g.w, ny = size_t{n} * g.oc * g.oh * g.ow;
    const auto x = test::random_floats(rng, nx);
    const auto w = test::random_floats(rng, size_t{g.oc} * g.c * g.kh * g.kw);
    const auto b = test::random_floats(rng, g.oc), dy = test::random_floats(rng, ny);
    std::vector<float> y(ny, 9.0f), dx(nx, 9.0f), dw(w.size(), 0.0f), db(g.oc, 0.0f);
    conv2d_forward(y.data(), x.data(), w.data(), b.data(), g, n);
    conv2d_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), g, n);
    const test::Reference r = test::conv2d_reference(g, n, x, w, b, dy);
    ASSERT_LT(rel_err(y.data(), r.y.data(), ny), kTol);
    ASSERT_LT(rel_err(dx.data(), r.dx.data(), nx), kTol);
    ASSERT_LT(rel_err(dw.data(), r.dw.data(), dw.size()), kTol);
    ASSERT_LT(rel_err(db.data(), r.db.data(), db.size()), kTol);
  }
}

TEST(Conv2dProperty, MicroBatchesAccumulateExactlyTheWholeBatch) {
  std::mt19937 rng(12);
  for (int i = 0; i < kSamples / 3; ++i) {
    const Geom2d g = draw_geometry(rng, 4);
    const uint32_t n = draw(rng, 2, 5), first = draw(rng, 1, n - 1);
    SCOPED_TRACE(describe(g, n) + " split at " + std::to_string(first));
    const size_t in_sample = size_t{g.c} * g.h * g.w, out_sample = size_t{g.oc} * g.oh * g.ow;
    const auto x = test::random_floats(rng, n * in_sample);
    const auto w = test::random_floats(rng, size_t{g.oc} * g.c * g.kh * g.kw);
    const auto dy = test::random_floats(rng, n * out_sample);
    const auto start = test::random_floats(rng, w.size());  // gradients accumulated before
    std::vector<float> whole(start), split(start), db_whole(g.oc, 0.5f), db_split(g.oc, 0.5f);
    conv2d_backward(nullptr, whole.data(), db_whole.data(), dy.data(), x.data(), w.data(), g, n);
    conv2d_backward(nullptr, split.data(), db_split.data(), dy.data(), x.data(), w.data(), g,
                    first);
    conv2d_backward(nullptr, split.data(), db_split.data(), dy.data() + first * out_sample,
                    x.data() + first * in_sample, w.data(), g, n - first);
    for (size_t j = 0; j < whole.size(); ++j) ASSERT_EQ(whole[j], split[j]) << "dw[" << j << "]";
    for (uint32_t j = 0; j < g.oc; ++j) ASSERT_EQ(db_whole[j], db_split[j]) << "db[" << j << "]";
  }
}

TEST(LinearProperty, SampledSizesMatchTheDefinitionAndSplitExactly) {
  std::mt19937 rng(13);
  for (int i = 0; i < kSamples; ++i) {
    const uint32_t n = draw(rng, 1, 9), in = draw(rng, 1, 70), out = draw(rng, 1, 13);
    const uint32_t first = n > 1 ? draw(rng, 1, n - 1) : n;
    SCOPED_TRACE("n" + std::to_string(n) + " in" + std::to_string(in) + " out" +
                 std::to_string(out));
    const auto x = test::random_floats(rng, size_t{n} * in), w = test::random_floats(rng, out * in);
    const auto b = test::random_floats(rng, out), dy = test::random_floats(rng, size_t{n} * out);
    std::vector<float> y(size_t{n} * out), dx(size_t{n} * in, 9.0f), dw(out * in, 0.0f),
        db(out, 0.0f);
    linear_forward(y.data(), x.data(), w.data(), b.data(), n, in, out);
    linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), n, in, out);
    const test::Reference r = test::linear_reference(x, w, b, dy, n, in, out);
    ASSERT_LT(rel_err(y.data(), r.y.data(), y.size()), kTol);
    ASSERT_LT(rel_err(dx.data(), r.dx.data(), dx.size()), kTol);
    ASSERT_LT(rel_err(dw.data(), r.dw.data(), dw.size()), kTol);
    ASSERT_LT(rel_err(db.data(), r.db.data(), db.size()), kTol);

    // The same gradients, accumulated over two micro-batches: the same bits.
    std::vector<float> dw2(out * in, 0.0f), db2(out, 0.0f);
    linear_backward(nullptr, dw2.data(), db2.data(), dy.data(), x.data(), w.data(), first, in, out);
    linear_backward(nullptr, dw2.data(), db2.data(), dy.data() + size_t{first} * out,
                    x.data() + size_t{first} * in, w.data(), n - first, in, out);
    for (size_t j = 0; j < dw.size(); ++j) ASSERT_EQ(dw[j], dw2[j]) << "dw[" << j << "]";
    for (uint32_t j = 0; j < out; ++j) ASSERT_EQ(db[j], db2[j]) << "db[" << j << "]";
  }
}

// PyTorch's CPU max pooling: the window walked row-major from its first position moves to a later
// element if it is strictly greater or NaN; the output is the picked value.
TEST(MaxPool2dProperty, SampledGeometriesAndValuesMatchPyTorchsRule) {
  std::mt19937 rng(14);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  for (int i = 0; i < kSamples; ++i) {
    Geom2d g = draw_geometry(rng, 3);
    if (draw(rng, 0, 1) == 0) {  // the 2x2 window at stride 2, which has its own code
      g.kh = g.kw = g.sh = g.sw = 2;
      g.ph = g.pw = 0;
      g.h = draw(rng, 2, 11);
      g.w = draw(rng, 2, 11);
    }
    g.ph = g.ph * 2 > g.kh ? g.kh / 2 : g.ph;  // PyTorch's rule for pooling
    g.pw = g.pw * 2 > g.kw ? g.kw / 2 : g.pw;
    if (g.h + 2 * g.ph < g.kh || g.w + 2 * g.pw < g.kw) {
      --i;  // no whole window: draw again
      continue;
    }
    g.oc = g.c;
    g.oh = window_out(g.h, g.kh, g.sh, g.ph);
    g.ow = window_out(g.w, g.kw, g.sw, g.pw);
    const uint32_t n = draw(rng, 1, 3);
    SCOPED_TRACE(describe(g, n));
    // Small integers make ties; some planes get a NaN, an infinity or a -infinity.
    std::vector<float> x(size_t{n} * g.c * g.h * g.w);
    for (float& v : x) v = static_cast<float>(static_cast<int>(draw(rng, 0, 4)) - 2);
    const size_t plane = size_t{g.h} * g.w;
    for (size_t p = 0; p < size_t{n} * g.c; ++p) {
      const uint32_t what = draw(rng, 0, 5);
      const size_t at = p * plane + draw(rng, 0, static_cast<uint32_t>(plane - 1));
      if (what == 0) x[at] = nan;
      if (what == 1) x[at] = inf;
      if (what == 2) x[at] = -inf;
    }
    const auto dy = test::random_floats(rng, size_t{n} * g.c * g.oh * g.ow);
    std::vector<float> y(dy.size()), dx(x.size(), 9.0f);
    maxpool2d_forward(y.data(), x.data(), g, n);
    maxpool2d_backward(dx.data(), dy.data(), x.data(), g, n);
    std::vector<float> want_y(y.size());
    std::vector<double> want_dx(x.size(), 0.0);
    for (size_t p = 0; p < size_t{n} * g.c; ++p) {
      for (uint32_t oy = 0; oy < g.oh; ++oy) {
        for (uint32_t ox = 0; ox < g.ow; ++ox) {
          int64_t best = -1;
          for (uint32_t ky = 0; ky < g.kh; ++ky) {
            for (uint32_t kx = 0; kx < g.kw; ++kx) {
              const int64_t iy = int64_t{oy} * g.sh + ky - g.ph;
              const int64_t ix = int64_t{ox} * g.sw + kx - g.pw;
              if (iy < 0 || ix < 0 || iy >= g.h || ix >= g.w) continue;
              const int64_t j = static_cast<int64_t>(p * plane) + iy * g.w + ix;
              if (best < 0 || x[j] > x[best] || std::isnan(x[j])) best = j;
            }
          }
          const size_t yi = (p * g.oh + oy) * g.ow + ox;
          want_y[yi] = x[best];
          want_dx[best] += dy[yi];
        }
      }
    }
    for (size_t j = 0; j < y.size(); ++j) {
      if (std::isnan(want_y[j])) {
        ASSERT_TRUE(std::isnan(y[j])) << "y[" << j << "]";
      } else {
        ASSERT_EQ(y[j], want_y[j]) << "y[" << j << "]";
      }
    }
    ASSERT_LT(rel_err(dx.data(), want_dx.data(), dx.size()), 1e-6);
  }
}

}  // namespace
}  // namespace nmcm
