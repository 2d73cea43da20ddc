#include "nmcm/sgd.h"

#include <gtest/gtest.h>

namespace nmcm {
namespace {

// The sequence torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01) produces for w = 1 and a
// constant gradient 0.5, written out by hand from its update rule.
TEST(Sgd, MomentumAndWeightDecayLikeTorch) {
  float w = 1.0f, g = 0.5f, buf = 0.0f;
  sgd_update(&w, &g, &buf, 1, 0.1f, 0.9f, 0.01f);
  // step 1: d = 0.5 + 0.01·1 = 0.51; buf = d (torch clones d on the first step); w = 1 - 0.051
  EXPECT_FLOAT_EQ(buf, 0.51f);
  EXPECT_FLOAT_EQ(w, 0.949f);
  sgd_update(&w, &g, &buf, 1, 0.1f, 0.9f, 0.01f);
  // step 2: d = 0.5 + 0.00949; buf = 0.9·0.51 + d = 0.96849; w = 0.949 - 0.096849
  EXPECT_FLOAT_EQ(buf, 0.96849f);
  EXPECT_FLOAT_EQ(w, 0.852151f);
}

TEST(Sgd, FirstStepFromZeroBufferIsExactlyTheGradient) {
  // Bit-exact: momentum · 0 + d == d, so a zeroed buffer reproduces torch's clone on step one.
  float w = 0.3f, g = 0.1234567f, buf = 0.0f;
  sgd_update(&w, &g, &buf, 1, 0.05f, 0.9f, 0.0f);
  EXPECT_EQ(buf, 0.1234567f);
}

TEST(Sgd, PlainSgdNeedsNoBuffer) {
  float w[2] = {1.0f, -2.0f}, g[2] = {0.5f, 0.25f};
  sgd_update(w, g, nullptr, 2, 0.1f, 0.0f, 0.0f);
  EXPECT_FLOAT_EQ(w[0], 0.95f);
  EXPECT_FLOAT_EQ(w[1], -2.025f);
}

}  // namespace
}  // namespace nmcm
