// The stage executor: a model split into two stages computes exactly what the whole model does,
// micro-batches add up to the batch, and misuse is a status, not a fault.
#include "nmcm/stage.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

#include "test_util.h"

namespace nmcm {
namespace {

struct Loaded {
  explicit Loaded(const char* name) : blob(test::golden(name)), arena(1 << 20) {
    status = stage.load(blob.data(), blob.size(), arena.data(), arena.size(), nullptr);
  }
  std::vector<uint8_t> blob;
  test::Arena arena;
  Stage stage;
  Status status{};
};

void set_input(Stage& s, uint32_t slot, const std::vector<float>& x, uint32_t first, uint32_t n) {
  const uint32_t f = s.input_floats();
  std::memcpy(s.input(slot), x.data() + size_t{first} * f, size_t{n} * f * sizeof(float));
}

// The digits CNN whole vs split after flatten (stage 0: conv relu pool flatten; stage 1: linear
// softmax), 8 samples as 2 micro-batches in 2 slots, forwards first then backwards as a pipeline
// runs them. The same float operations happen in the same order, so results are bit-identical.
TEST(Stage, TwoStagesComputeExactlyTheWholeModel) {
  Loaded whole("cnn_whole"), first("cnn_stage0"), second("cnn_stage1");
  ASSERT_TRUE(whole.status.ok() && first.status.ok() && second.status.ok());
  std::mt19937 rng(5);
  const auto x = test::random_floats(rng, 8 * 64);
  const int32_t y[8] = {0, 3, 9, 1, 4, 4, 7, 2};
  const uint32_t mb = 4;
  LossResult lw[2], ls[2];
  for (uint32_t slot = 0; slot < 2; ++slot) {
    set_input(whole.stage, slot, x, slot * mb, mb);
    set_input(first.stage, slot, x, slot * mb, mb);
    ASSERT_TRUE(whole.stage.forward(slot, mb).ok());
    ASSERT_TRUE(first.stage.forward(slot, mb).ok());
    std::memcpy(second.stage.input(slot), first.stage.output(slot), mb * 128 * sizeof(float));
    ASSERT_TRUE(second.stage.forward(slot, mb).ok());
    std::memcpy(whole.stage.labels(slot), y + slot * mb, sizeof(int32_t) * mb);
    std::memcpy(second.stage.labels(slot), y + slot * mb, sizeof(int32_t) * mb);
  }
  for (uint32_t slot = 0; slot < 2; ++slot) {
    ASSERT_TRUE(
        whole.stage.loss_backward_seed(slot, mb, 8, LossKind::kCrossEntropy, &lw[slot]).ok());
    ASSERT_TRUE(whole.stage.backward(slot, mb).ok());
    ASSERT_TRUE(
        second.stage.loss_backward_seed(slot, mb, 8, LossKind::kCrossEntropy, &ls[slot]).ok());
    ASSERT_TRUE(second.stage.backward(slot, mb).ok());
    std::memcpy(first.stage.grad_in(), second.stage.grad_out(), mb * 128 * sizeof(float));
    ASSERT_TRUE(first.stage.backward(slot, mb).ok());
    EXPECT_EQ(lw[slot].loss_sum, ls[slot].loss_sum);
    EXPECT_EQ(lw[slot].correct, ls[slot].correct);
  }
  for (Loaded* l : {&whole, &first, &second})
    ASSERT_TRUE(l->stage.sgd_step(0.05f, 0.9f, 1e-3f).ok());
  // Whole-model tensors 0..3 are stage 0's tensors 0..1 then stage 1's 0..1.
  for (uint32_t t = 0; t < 4; ++t) {
    Stage& part = t < 2 ? first.stage : second.stage;
    const TensorView a = whole.stage.grads(t), b = part.grads(t % 2);
    const TensorView wa = whole.stage.weights(t), wb = part.weights(t % 2);
    ASSERT_EQ(a.count(), b.count());
    for (uint32_t i = 0; i < a.count(); ++i) {
      ASSERT_EQ(a.data[i], b.data[i]) << "grad of tensor " << t << "[" << i << "]";
      ASSERT_EQ(wa.data[i], wb.data[i]) << "weight of tensor " << t << "[" << i << "]";
    }
  }
}

TEST(Stage, MicroBatchesAddUpToTheBatch) {
  Loaded once("mlp_whole"), split("mlp_whole");
  ASSERT_TRUE(once.status.ok() && split.status.ok());
  std::mt19937 rng(6);
  const auto x = test::random_floats(rng, 8 * 16);
  const int32_t y[8] = {0, 1, 2, 3, 4, 0, 1, 2};
  LossResult r{}, part{};
  float total = 0;
  set_input(once.stage, 0, x, 0, 8);
  std::memcpy(once.stage.labels(0), y, sizeof y);
  ASSERT_TRUE(once.stage.forward(0, 8).ok());
  ASSERT_TRUE(once.stage.loss_backward_seed(0, 8, 8, LossKind::kMse, &r).ok());
  ASSERT_TRUE(once.stage.backward(0, 8).ok());
  for (uint32_t s = 0; s < 8; s += 3) {  // micro-batches of 3, 3 and 2
    const uint32_t n = s + 3 <= 8 ? 3 : 8 - s;
    set_input(split.stage, 0, x, s, n);
    std::memcpy(split.stage.labels(0), y + s, n * sizeof(int32_t));
    ASSERT_TRUE(split.stage.forward(0, n).ok());
    ASSERT_TRUE(split.stage.loss_backward_seed(0, n, 8, LossKind::kMse, &part).ok());
    ASSERT_TRUE(split.stage.backward(0, n).ok());
    total += part.loss_sum;
  }
  EXPECT_NEAR(total, r.loss_sum, 1e-6f * r.loss_sum);
  for (uint32_t t = 0; t < once.stage.tensor_count(); ++t) {
    const TensorView a = once.stage.grads(t), b = split.stage.grads(t);
    for (uint32_t i = 0; i < a.count(); ++i) EXPECT_FLOAT_EQ(a.data[i], b.data[i]);
  }
  once.stage.zero_grad();
  for (uint32_t i = 0; i < once.stage.grads(0).count(); ++i)
    ASSERT_EQ(once.stage.grads(0).data[i], 0.0f);
}

TEST(Stage, MisuseIsAStatus) {
  Loaded last("cnn_stage1"), head("cnn_stage0");
  ASSERT_TRUE(last.status.ok() && head.status.ok());
  Stage& s = last.stage;
  EXPECT_EQ(s.forward(2, 1).code, StatusCode::kInvalidArgument);  // slots: 2
  EXPECT_EQ(s.forward(0, 0).code, StatusCode::kInvalidArgument);
  EXPECT_EQ(s.forward(0, 5).code, StatusCode::kInvalidArgument);  // micro-batch: 4
  EXPECT_EQ(s.input(2), nullptr);
  EXPECT_EQ(s.grad_in(), nullptr);  // the last stage makes its own gradient
  ASSERT_TRUE(s.forward(0, 4).ok());
  EXPECT_EQ(s.backward(0, 4).code, StatusCode::kBadState);  // no loss seeded yet
  const int32_t bad[4] = {0, 1, 10, 2};
  std::memcpy(s.labels(0), bad, sizeof bad);
  LossResult r;
  EXPECT_EQ(s.loss_backward_seed(0, 4, 4, LossKind::kMse, &r).code, StatusCode::kInvalidArgument);
  EXPECT_EQ(s.loss_backward_seed(0, 4, 3, LossKind::kMse, &r).code, StatusCode::kInvalidArgument);
  EXPECT_EQ(s.loss_backward_seed(0, 4, 4, static_cast<LossKind>(7), &r).code,
            StatusCode::kInvalidArgument);

  EXPECT_EQ(head.stage.labels(0), nullptr);
  EXPECT_EQ(head.stage.grad_out(), nullptr);  // the first stage sends nothing upstream
  EXPECT_EQ(head.stage.loss_backward_seed(0, 1, 1, LossKind::kMse, &r).code, StatusCode::kBadState);

  Stage empty;
  EXPECT_EQ(empty.forward(0, 1).code, StatusCode::kBadState);
  EXPECT_EQ(empty.input(0), nullptr);
  EXPECT_EQ(empty.sgd_step(0.1f, 0.0f, 0.0f).code, StatusCode::kBadState);
  test::Arena arena(1 << 16);
  EXPECT_EQ(
      empty.load(last.blob.data(), last.blob.size(), arena.data() + 4, arena.size() - 4, nullptr)
          .code,
      StatusCode::kInvalidArgument);  // misaligned arena
}

TEST(Stage, LoadCopiesTheWeights) {
  Loaded l("mlp_whole");
  ASSERT_TRUE(l.status.ok());
  const TensorView w = l.stage.weights(0);
  EXPECT_EQ(w.shape, shape2(12, 16));
  for (uint32_t i = 0; i < w.count(); ++i) {
    ASSERT_EQ(w.data[i], blob_tensor_value(l.blob.data(), l.stage.layout(), 0, i));
  }
  EXPECT_EQ(l.stage.weights(99).data, nullptr);
}

struct ProbeCall {
  StagePhase phase;
  uint32_t layer;
  uint32_t n;
  bool done;
  bool operator==(const ProbeCall& o) const {
    return phase == o.phase && layer == o.layer && n == o.n && done == o.done;
  }
};

void record_probe(void* context, StagePhase phase, uint32_t layer, uint32_t n, bool done) {
  static_cast<std::vector<ProbeCall>*>(context)->push_back({phase, layer, n, done});
}

// The probe brackets each piece of work that runs, in order: every layer's forward, the loss,
// the backward of every layer that has one to run (not the softmax fused into the loss), the step.
TEST(Stage, ProbeBracketsEveryPieceOfWork) {
  Loaded l("cnn_whole");  // conv relu pool flatten linear softmax
  ASSERT_TRUE(l.status.ok());
  std::vector<ProbeCall> calls;
  l.stage.set_probe(record_probe, &calls);
  std::mt19937 rng(3);
  set_input(l.stage, 0, test::random_floats(rng, 3 * 64), 0, 3);
  const int32_t y[3] = {1, 2, 3};
  std::memcpy(l.stage.labels(0), y, sizeof y);
  LossResult r{};
  ASSERT_TRUE(l.stage.forward(0, 3).ok());
  ASSERT_TRUE(l.stage.loss_backward_seed(0, 3, 3, LossKind::kCrossEntropy, &r).ok());
  ASSERT_TRUE(l.stage.backward(0, 3).ok());
  ASSERT_TRUE(l.stage.sgd_step(0.1f, 0.0f, 0.0f).ok());

  std::vector<ProbeCall> want;
  auto bracket = [&want](StagePhase phase, uint32_t layer, uint32_t n) {
    want.push_back({phase, layer, n, false});
    want.push_back({phase, layer, n, true});
  };
  for (uint32_t i = 0; i < 6; ++i) bracket(StagePhase::kForward, i, 3);
  bracket(StagePhase::kLoss, 0, 3);
  for (uint32_t i = 5; i-- > 0;) bracket(StagePhase::kBackward, i, 3);
  bracket(StagePhase::kStep, 0, 0);
  EXPECT_EQ(calls, want);

  calls.clear();
  l.stage.set_probe(nullptr, nullptr);
  ASSERT_TRUE(l.stage.forward(0, 3).ok());
  EXPECT_TRUE(calls.empty());
}

}  // namespace
}  // namespace nmcm
