#include "nmcm/loss.h"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <vector>

namespace nmcm {
namespace {

TEST(CrossEntropyLogits, LossGradientAndCorrectCount) {
  const float z[6] = {1.0f, 2.0f, 3.0f, 500.0f, 0.0f, -500.0f};  // second row would overflow exp
  const int32_t y[2] = {2, 1};
  float dz[6];
  const LossResult r = cross_entropy_logits(dz, z, y, 2, 3, 0.5f);
  const double lse0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0));
  const double loss0 = lse0 - 3.0, loss1 = 500.0;  // -log softmax(z)[1] = 500 - 0 + log(1 + ...)
  EXPECT_NEAR(r.loss_sum, loss0 + loss1, 1e-4);
  EXPECT_EQ(r.correct, 1u);  // row 0 predicts 2 (right), row 1 predicts 0 (wrong)
  for (int i = 0; i < 3; ++i) {
    const double p = std::exp(z[i] - lse0);
    EXPECT_NEAR(dz[i], 0.5 * (p - (i == 2 ? 1 : 0)), 1e-7);
  }
  EXPECT_NEAR(dz[3], 0.5f, 1e-7);  // p = (1, 0, 0), label 1
  EXPECT_NEAR(dz[4], -0.5f, 1e-7);
  EXPECT_EQ(dz[5], 0.0f);
}

TEST(CrossEntropyProbs, FusedGradientAndNoLogOfZero) {
  // The second row's label has an underflowed probability: the loss saturates at -log(FLT_MIN)
  // instead of becoming inf, and the gradient stays (p - onehot)·scale.
  const float p[4] = {0.25f, 0.75f, 1.0f, 0.0f};
  const int32_t y[2] = {1, 1};
  float dz[4];
  const LossResult r = cross_entropy_probs(dz, p, y, 2, 2, 0.5f);
  EXPECT_TRUE(std::isfinite(r.loss_sum));
  EXPECT_NEAR(r.loss_sum, -std::log(0.75) - std::log(double{FLT_MIN}), 1e-4);
  EXPECT_EQ(r.correct, 1u);
  const float want[4] = {0.125f, -0.125f, 0.5f, -0.5f};
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(dz[i], want[i]);
}

TEST(Mse, MeanOverBatchAndClassesAgainstOneHot) {
  const float out[4] = {0.5f, 0.5f, 2.0f, 0.0f};
  const int32_t y[2] = {0, 1};
  float d[4];
  // Whole batch B = 4 (this micro-batch holds 2 of them): scale 1/4, 2 classes.
  const LossResult r = mse_onehot(d, out, y, 2, 2, 0.25f);
  EXPECT_FLOAT_EQ(r.loss_sum, (0.25f + 0.25f) / 2 + (4.0f + 1.0f) / 2);
  EXPECT_EQ(r.correct, 1u);  // first row ties: arg-max is the first, class 0
  const float want[4] = {2 * -0.5f / 8, 2 * 0.5f / 8, 2 * 2.0f / 8, 2 * -1.0f / 8};
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(d[i], want[i]);
}

TEST(Loss, NullGradientComputesOnlyTheLoss) {
  const float z[2] = {0.0f, 0.0f};
  const int32_t y[1] = {0};
  EXPECT_NEAR(cross_entropy_logits(nullptr, z, y, 1, 2, 1.0f).loss_sum, std::log(2.0), 1e-6);
  EXPECT_NEAR(cross_entropy_probs(nullptr, z, y, 1, 2, 1.0f).loss_sum, -std::log(double{FLT_MIN}),
              1e-4);
  EXPECT_FLOAT_EQ(mse_onehot(nullptr, z, y, 1, 2, 1.0f).loss_sum, 0.5f);
}

}  // namespace
}  // namespace nmcm
