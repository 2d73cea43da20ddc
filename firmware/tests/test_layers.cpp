// Each kernel against a naive double-precision implementation written straight from the
// definition (PyTorch's semantics). Tolerance 1e-5 relative to the largest reference value: the
// kernels sum at most a few hundred float32 products here (rounding ~sqrt(K)·2^-24 < 1e-6).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "nmcm/layers/conv2d.h"
#include "nmcm/layers/flatten.h"
#include "nmcm/layers/linear.h"
#include "nmcm/layers/maxpool2d.h"
#include "nmcm/layers/relu.h"
#include "nmcm/layers/softmax.h"
#include "test_util.h"

namespace nmcm {
namespace {

using test::rel_err;
constexpr double kTol = 1e-5;

// ---- linear ----

TEST(Linear, ForwardAndBackwardMatchTheDefinition) {
  std::mt19937 rng(1);
  const uint32_t n = 5, in = 37, out = 11;
  const auto x = test::random_floats(rng, n * in), w = test::random_floats(rng, out * in);
  const auto b = test::random_floats(rng, out), dy = test::random_floats(rng, n * out);
  std::vector<float> y(n * out), dx(n * in, 123.0f), dw(out * in, 0.0f), db(out, 0.0f);
  linear_forward(y.data(), x.data(), w.data(), b.data(), n, in, out);
  linear_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), n, in, out);

  const test::Reference r = test::linear_reference(x, w, b, dy, n, in, out);
  EXPECT_LT(rel_err(y.data(), r.y.data(), y.size()), kTol);
  EXPECT_LT(rel_err(dx.data(), r.dx.data(), dx.size()), kTol);
  EXPECT_LT(rel_err(dw.data(), r.dw.data(), dw.size()), kTol);
  EXPECT_LT(rel_err(db.data(), r.db.data(), db.size()), kTol);
}

TEST(Linear, BackwardAccumulatesParameterGradientsAndOverwritesInputGradient) {
  const float x[2] = {1, 2}, w[2] = {3, 4}, dy[1] = {0.5f};
  float dw[2] = {10, 20}, db[1] = {1}, dx[2] = {99, 99};
  linear_backward(dx, dw, db, dy, x, w, 1, 2, 1);
  EXPECT_FLOAT_EQ(dw[0], 10.5f);
  EXPECT_FLOAT_EQ(dw[1], 21.0f);
  EXPECT_FLOAT_EQ(db[0], 1.5f);
  EXPECT_FLOAT_EQ(dx[0], 1.5f);
  EXPECT_FLOAT_EQ(dx[1], 2.0f);
  linear_backward(nullptr, dw, nullptr, dy, x, w, 1, 2, 1);  // no input gradient, no bias
  EXPECT_FLOAT_EQ(dw[0], 11.0f);
}

// ---- conv2d ----

struct ConvCase {
  uint32_t n, c, h, w, oc, kh, kw, sh, sw, ph, pw;
};

std::string name(const ConvCase& k) {
  return "c" + std::to_string(k.c) + "_" + std::to_string(k.h) + "x" + std::to_string(k.w) + "_oc" +
         std::to_string(k.oc) + "_k" + std::to_string(k.kh) + "x" + std::to_string(k.kw) + "_s" +
         std::to_string(k.sh) + "x" + std::to_string(k.sw) + "_p" + std::to_string(k.ph) + "x" +
         std::to_string(k.pw);
}

void PrintTo(const ConvCase& k, std::ostream* os) { *os << name(k); }

Geom2d geom(const ConvCase& k, uint32_t oc) {
  return Geom2d{k.c,
                k.h,
                k.w,
                oc,
                window_out(k.h, k.kh, k.sh, k.ph),
                window_out(k.w, k.kw, k.sw, k.pw),
                k.kh,
                k.kw,
                k.sh,
                k.sw,
                k.ph,
                k.pw};
}

class Conv2dTest : public ::testing::TestWithParam<ConvCase> {};

TEST_P(Conv2dTest, ForwardAndBackwardMatchTheDefinition) {
  const ConvCase k = GetParam();
  const Geom2d g = geom(k, k.oc);
  ASSERT_GT(g.oh, 0u);
  ASSERT_GT(g.ow, 0u);
  std::mt19937 rng(k.c * 100 + k.kh * 10 + k.sh);
  const size_t nx = size_t{k.n} * g.c * g.h * g.w, ny = size_t{k.n} * g.oc * g.oh * g.ow;
  const size_t nw = size_t{g.oc} * g.c * g.kh * g.kw;
  const auto x = test::random_floats(rng, nx), w = test::random_floats(rng, nw);
  const auto b = test::random_floats(rng, g.oc), dy = test::random_floats(rng, ny);
  std::vector<float> y(ny), dx(nx, 7.0f), dw(nw, 0.0f), db(g.oc, 0.0f);
  conv2d_forward(y.data(), x.data(), w.data(), b.data(), g, k.n);
  conv2d_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), w.data(), g, k.n);

  const test::Reference r = test::conv2d_reference(g, k.n, x, w, b, dy);
  EXPECT_LT(rel_err(y.data(), r.y.data(), ny), kTol);
  EXPECT_LT(rel_err(dx.data(), r.dx.data(), nx), kTol);
  EXPECT_LT(rel_err(dw.data(), r.dw.data(), nw), kTol);
  EXPECT_LT(rel_err(db.data(), r.db.data(), g.oc), kTol);

  // Without din and bias only the weight gradient is computed (and accumulates).
  std::vector<float> dw2(dw);
  conv2d_backward(nullptr, dw2.data(), nullptr, dy.data(), x.data(), w.data(), g, k.n);
  for (size_t i = 0; i < nw; ++i) EXPECT_NEAR(dw2[i], 2 * dw[i], 1e-5 * (1 + std::fabs(dw[i])));
}

INSTANTIATE_TEST_SUITE_P(
    Geometries, Conv2dTest,
    ::testing::Values(ConvCase{3, 1, 8, 8, 8, 3, 3, 1, 1, 1, 1},    // the digits CNN's conv
                      ConvCase{2, 3, 9, 7, 4, 2, 4, 2, 1, 1, 0},    // rectangular, mixed stride
                      ConvCase{2, 2, 5, 5, 3, 5, 5, 1, 1, 2, 2},    // kernel = image
                      ConvCase{2, 2, 6, 6, 2, 1, 1, 2, 2, 1, 1},    // 1x1, stride 2
                      ConvCase{1, 1, 4, 4, 1, 2, 2, 2, 2, 3, 3},    // padding larger than kernel
                      ConvCase{2, 4, 7, 10, 5, 3, 2, 3, 2, 0, 1},   // stride 3, odd sizes
                      ConvCase{4, 1, 8, 12, 4, 1, 1, 2, 2, 1, 1}),  // 1x1, padding only rows
    [](const ::testing::TestParamInfo<ConvCase>& p) { return name(p.param); });

// ---- maxpool2d ----

TEST(MaxPool2d, TiesGoToTheFirstMaximumAndOverlapsAccumulate) {
  // 1 plane 3x3 of equal values, kernel 2 stride 1: every window's first element is the max.
  const Geom2d g{1, 3, 3, 1, 2, 2, 2, 2, 1, 1, 0, 0};
  const float x[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  const float dy[4] = {1, 2, 3, 4};
  float y[4], dx[9];
  maxpool2d_forward(y, x, g, 1);
  maxpool2d_backward(dx, dy, x, g, 1);
  for (float v : y) EXPECT_EQ(v, 1.0f);
  const float want[9] = {1, 2, 0, 3, 4, 0, 0, 0, 0};  // window (oy, ox) starts at (oy, ox)
  for (int i = 0; i < 9; ++i) EXPECT_EQ(dx[i], want[i]) << i;
}

TEST(MaxPool2d, PaddingIsMinusInfinity) {
  // All inputs negative: zero padding would win, -inf padding never does.
  const Geom2d g{1, 2, 2, 1, 2, 2, 2, 2, 2, 2, 1, 1};
  const float x[4] = {-4, -3, -2, -1};
  const float dy[4] = {1, 1, 1, 1};
  float y[4], dx[4];
  maxpool2d_forward(y, x, g, 1);
  maxpool2d_backward(dx, dy, x, g, 1);
  const float want_y[4] = {-4, -3, -2, -1};
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(y[i], want_y[i]);
    EXPECT_EQ(dx[i], 1.0f);
  }
}

TEST(MaxPool2d, NanWinsAsInPyTorch) {
  // PyTorch moves to any NaN it meets, so the last NaN of the window takes the gradient.
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Geom2d g{1, 1, 5, 1, 1, 1, 1, 5, 1, 1, 0, 0};
  const float x[5] = {5, nan, 7, nan, 1};
  const float dy[1] = {1};
  float y[1], dx[5];
  maxpool2d_forward(y, x, g, 1);
  maxpool2d_backward(dx, dy, x, g, 1);
  EXPECT_TRUE(std::isnan(y[0]));
  const float want[5] = {0, 0, 0, 1, 0};
  for (int i = 0; i < 5; ++i) EXPECT_EQ(dx[i], want[i]) << i;
}

TEST(MaxPool2d, RandomWindowsMatchTheDefinition) {
  std::mt19937 rng(3);
  const uint32_t n = 2, c = 3, h = 7, w = 9, kh = 3, kw = 2, sh = 2, sw = 1, ph = 1, pw = 1;
  const Geom2d g{c,  h,  w,  c, window_out(h, kh, sh, ph), window_out(w, kw, sw, pw), kh, kw,
                 sh, sw, ph, pw};
  // Values from a small set so that windows hold ties.
  std::uniform_int_distribution<int> small(-2, 2);
  std::vector<float> x(n * c * h * w);
  for (float& v : x) v = static_cast<float>(small(rng));
  const auto dy = test::random_floats(rng, size_t{n} * c * g.oh * g.ow);
  std::vector<float> y(dy.size()), dx(x.size());
  maxpool2d_forward(y.data(), x.data(), g, n);
  maxpool2d_backward(dx.data(), dy.data(), x.data(), g, n);
  std::vector<double> ry(y.size()), rdx(x.size(), 0.0);
  for (uint32_t p = 0; p < n * c; ++p) {
    for (uint32_t oy = 0; oy < g.oh; ++oy) {
      for (uint32_t ox = 0; ox < g.ow; ++ox) {
        int best = -1;
        for (uint32_t ky = 0; ky < kh; ++ky) {
          for (uint32_t kx = 0; kx < kw; ++kx) {
            const int iy = static_cast<int>(oy * sh + ky) - static_cast<int>(ph);
            const int ix = static_cast<int>(ox * sw + kx) - static_cast<int>(pw);
            if (iy < 0 || ix < 0 || iy >= static_cast<int>(h) || ix >= static_cast<int>(w))
              continue;
            const int i = static_cast<int>(p * h * w) + iy * static_cast<int>(w) + ix;
            if (best < 0 || x[i] > x[best]) best = i;  // strictly greater: the first max stays
          }
        }
        const size_t yi = (size_t{p} * g.oh + oy) * g.ow + ox;
        ry[yi] = x[best];
        rdx[best] += dy[yi];
      }
    }
  }
  EXPECT_EQ(rel_err(y.data(), ry.data(), y.size()), 0.0);
  EXPECT_LT(rel_err(dx.data(), rdx.data(), dx.size()), 1e-6);
}

// ---- relu, flatten, softmax ----

TEST(Relu, BackwardUsesTheOutputLikeThresholdBackward) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float x[5] = {-1.0f, 0.0f, -0.0f, 2.0f, nan};
  const float dy[5] = {1, 1, 1, 1, 1};
  float y[5], dx[5];
  relu_forward(y, x, 5);
  relu_backward(dx, dy, y, 5);
  EXPECT_EQ(y[0], 0.0f);
  EXPECT_EQ(y[3], 2.0f);
  EXPECT_TRUE(std::isnan(y[4]));          // torch.relu propagates NaN
  const float want[5] = {0, 0, 0, 1, 1};  // zero where the output is <= 0
  for (int i = 0; i < 5; ++i) EXPECT_EQ(dx[i], want[i]) << i;
}

TEST(Flatten, CopiesOnlyBetweenDistinctBuffers) {
  float a[3] = {1, 2, 3}, b[3] = {0, 0, 0};
  flatten_forward(b, a, 3);
  EXPECT_EQ(b[2], 3.0f);
  flatten_forward(a, a, 3);  // same storage: nothing to do
  flatten_backward(a, b, 3);
  EXPECT_EQ(a[1], 2.0f);
}

TEST(Softmax, ForwardAndBackwardMatchTheDefinition) {
  std::mt19937 rng(4);
  const uint32_t n = 3, f = 13;
  auto x = test::random_floats(rng, n * f, 3.0f);
  x[5] = 1000.0f;  // no overflow: exp is taken of x - max
  const auto dy = test::random_floats(rng, n * f);
  std::vector<float> y(n * f), dx(n * f);
  softmax_forward(y.data(), x.data(), n, f);
  softmax_backward(dx.data(), dy.data(), y.data(), n, f);
  std::vector<double> ry(n * f), rdx(n * f);
  for (uint32_t s = 0; s < n; ++s) {
    double max = -INFINITY, total = 0, dot = 0;
    for (uint32_t i = 0; i < f; ++i) max = std::fmax(max, x[s * f + i]);
    for (uint32_t i = 0; i < f; ++i) total += std::exp(double{x[s * f + i]} - max);
    for (uint32_t i = 0; i < f; ++i) ry[s * f + i] = std::exp(double{x[s * f + i]} - max) / total;
    for (uint32_t i = 0; i < f; ++i) dot += ry[s * f + i] * dy[s * f + i];
    for (uint32_t i = 0; i < f; ++i) rdx[s * f + i] = ry[s * f + i] * (dy[s * f + i] - dot);
  }
  EXPECT_LT(rel_err(y.data(), ry.data(), y.size()), kTol);
  EXPECT_LT(rel_err(dx.data(), rdx.data(), dx.size()), kTol);
}

}  // namespace
}  // namespace nmcm
