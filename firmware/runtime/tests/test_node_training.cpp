// A node trains exactly as its Stage called directly does (docs/protocol.md, "One batch, step by
// step"): the same float operations in the same order, so METRICS, gradients, momentum and
// weights are bit-identical. And weights go in and out in chunks that fit the receiver.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "node_client.h"

namespace nmcm::runtime {
namespace {

using net::ErrorCode;
using net::MsgType;
using test::Client;
using test::Received;
using test::TestNode;

// The stage the node runs, loaded from the same blob and driven by hand.
struct Reference {
  explicit Reference(const std::vector<uint8_t>& b) : blob(b), storage(1 << 20) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(storage.data());
    uint8_t* arena = storage.data() + ((16 - p % 16) % 16);
    EXPECT_TRUE(stage.load(blob.data(), blob.size(), arena, storage.size() - 16, nullptr).ok());
  }
  std::vector<uint8_t> blob;
  std::vector<uint8_t> storage;
  Stage stage;
};

struct Batch {
  std::vector<float> x;  // [B, input floats]
  std::vector<int32_t> y;
  std::vector<uint16_t> sizes;  // samples per micro-batch
};

Batch make_batch(std::mt19937& rng, const Stage& stage, std::vector<uint16_t> sizes) {
  Batch b;
  b.sizes = std::move(sizes);
  uint32_t total = 0;
  for (uint16_t n : b.sizes) total += n;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int32_t> label(0, static_cast<int32_t>(stage.output_floats()) - 1);
  b.x.resize(size_t{total} * stage.input_floats());
  for (float& v : b.x) v = normal(rng);
  b.y.resize(total);
  for (int32_t& v : b.y) v = label(rng);
  return b;
}

struct BatchResult {
  std::vector<float> loss_sum;
  std::vector<uint32_t> correct;
};

// One batch through the node as the coordinator runs it, one micro-batch in flight.
BatchResult node_batch(Client& c, uint32_t id, const Batch& b, uint32_t features, bool eval,
                       net::LossCode loss = net::LossCode::kCrossEntropy) {
  BatchResult out;
  const uint16_t flags = eval ? net::kFlagEval : 0;
  const uint16_t total = static_cast<uint16_t>(b.y.size());
  const uint16_t m_count = static_cast<uint16_t>(b.sizes.size());
  c.send_message(
      MsgType::kBatchBegin,
      net::BatchBegin{total, m_count, eval ? net::Mode::kEval : net::Mode::kTrain, loss, 7},
      net::FrameMeta{flags, id, 0});
  Received ack = c.receive();
  EXPECT_EQ(ack.type(), MsgType::kAck) << ack.reason();
  EXPECT_EQ(ack.header.batch, id);
  uint32_t first = 0;
  for (uint16_t m = 0; m < m_count; ++m) {
    const uint16_t n = b.sizes[m];
    const net::FrameMeta meta{flags, id, m};
    c.send_message(MsgType::kInputs, net::TensorHead{n, features}, meta,
                   b.x.data() + size_t{first} * features, uint32_t{n} * features * 4);
    c.send_message(MsgType::kLabels, net::LabelsHead{n}, meta, b.y.data() + first, uint32_t{n} * 4);
    bool metrics = false, acked = false;
    while (!metrics || !acked) {
      const Received r = c.receive();
      if (!r.ok()) {
        ADD_FAILURE() << "no answer in batch " << id;
        return out;
      }
      EXPECT_EQ(r.header.batch, id);
      EXPECT_EQ(r.header.micro_batch, m);
      EXPECT_EQ(r.header.flags, flags);
      if (r.type() == MsgType::kMetrics) {
        net::Metrics x{};
        net::decode(r.fixed.data(), &x);
        EXPECT_EQ(x.samples, n);
        out.loss_sum.push_back(x.loss_sum);
        out.correct.push_back(x.correct);
        metrics = true;
      } else if (r.type() == MsgType::kAck) {
        net::Ack a{};
        net::decode(r.fixed.data(), &a);
        EXPECT_EQ(a.acked_type, MsgType::kInputs);
        acked = true;
      } else {
        ADD_FAILURE() << "unexpected " << net::type_name(r.type()) << ": " << r.reason();
        return out;
      }
    }
    first += n;
  }
  if (!eval) {
    c.send_message(MsgType::kStep, net::Step{0.05f, 0.9f, 1e-3f}, net::FrameMeta{0, id, 0});
    const Received step = c.receive();
    net::Ack a{};
    EXPECT_TRUE(step.type() == MsgType::kAck && net::decode(step.fixed.data(), &a) &&
                a.acked_type == MsgType::kStep)
        << step.reason();
  }
  return out;
}

BatchResult reference_batch(Stage& s, const Batch& b, bool eval, LossKind loss) {
  BatchResult out;
  if (!eval) s.zero_grad();
  uint32_t first = 0;
  const uint32_t total = static_cast<uint32_t>(b.y.size());
  for (uint16_t n : b.sizes) {
    std::memcpy(s.input(0), b.x.data() + size_t{first} * s.input_floats(),
                size_t{n} * s.input_floats() * 4);
    std::memcpy(s.labels(0), b.y.data() + first, size_t{n} * 4);
    EXPECT_TRUE(s.forward(0, n).ok());
    LossResult r{};
    EXPECT_TRUE(s.loss_backward_seed(0, n, total, loss, &r).ok());
    if (!eval) {
      EXPECT_TRUE(s.backward(0, n).ok());
    }
    out.loss_sum.push_back(r.loss_sum);
    out.correct.push_back(r.correct);
    first += n;
  }
  if (!eval) {
    EXPECT_TRUE(s.sgd_step(0.05f, 0.9f, 1e-3f).ok());
  }
  return out;
}

void expect_same_tensors(Client& c, Stage& reference) {
  for (uint32_t t = 0; t < reference.tensor_count(); ++t) {
    const uint32_t count = reference.weights(t).count();
    for (net::TensorKind kind :
         {net::TensorKind::kParameter, net::TensorKind::kGradient, net::TensorKind::kMomentum}) {
      const std::vector<float> got = test::pull_tensor(c, static_cast<uint16_t>(t), count, kind);
      const float* want = kind == net::TensorKind::kParameter  ? reference.weights(t).data
                          : kind == net::TensorKind::kGradient ? reference.grads(t).data
                                                               : nullptr;
      if (want == nullptr) continue;  // momentum: checked through the weights it moved
      for (uint32_t i = 0; i < count; ++i) {
        ASSERT_EQ(got[i], want[i]) << "tensor " << t << " kind " << int(kind) << " [" << i << "]";
      }
    }
  }
}

TEST(NodeTraining, BatchesMatchTheStageCalledDirectly) {
  const std::vector<uint8_t> blob = test::golden("cnn_whole");
  TestNode node(blob);
  ASSERT_TRUE(node.started());
  Reference ref(blob);
  auto c = test::connect_coordinator(node);
  std::mt19937 rng(11);
  // Full and uneven micro-batches (the last batch of an epoch is short), both losses.
  const std::vector<std::vector<uint16_t>> shapes = {{4, 4}, {4, 3}, {2}, {4, 4}};
  const net::LossCode losses[] = {net::LossCode::kCrossEntropy, net::LossCode::kCrossEntropy,
                                  net::LossCode::kMse, net::LossCode::kCrossEntropy};
  float last_loss = 0;
  for (uint32_t i = 0; i < shapes.size(); ++i) {
    const Batch b = make_batch(rng, ref.stage, shapes[i]);
    const BatchResult got = node_batch(*c, 100 + i, b, 64, false, losses[i]);
    const BatchResult want = reference_batch(ref.stage, b, false, static_cast<LossKind>(losses[i]));
    ASSERT_EQ(got.loss_sum, want.loss_sum) << "batch " << i;
    ASSERT_EQ(got.correct, want.correct) << "batch " << i;
    float sum = 0;
    for (float v : want.loss_sum) sum += v;
    last_loss = sum / static_cast<float>(b.y.size());
  }
  expect_same_tensors(*c, ref.stage);

  // Evaluation: forward only, same METRICS, nothing learnt.
  const Batch e = make_batch(rng, ref.stage, {4, 4});
  const BatchResult got = node_batch(*c, 200, e, 64, true);
  const BatchResult want = reference_batch(ref.stage, e, true, LossKind::kCrossEntropy);
  EXPECT_EQ(got.loss_sum, want.loss_sum);
  EXPECT_EQ(got.correct, want.correct);
  expect_same_tensors(*c, ref.stage);

  const net::StatusReport s = test::status_of(node);
  EXPECT_EQ(s.state, net::NodeState::kIdle);
  EXPECT_EQ(s.steps, 4u);
  EXPECT_EQ(s.batch, 200u);
  EXPECT_EQ(s.last_loss, last_loss);
  EXPECT_GT(s.compute_ticks, 0u);
  EXPECT_GT(s.comm_ticks, 0u);
  EXPECT_GT(s.bytes_sent, 0u);
  EXPECT_EQ(s.frames_rejected, 0u);
}

TEST(NodeTraining, TwoMicroBatchesInFlightUseBothSlots) {
  const std::vector<uint8_t> blob = test::golden("cnn_whole");
  TestNode node(blob);
  ASSERT_TRUE(node.started());
  Reference ref(blob);
  auto c = test::connect_coordinator(node);
  std::mt19937 rng(3);
  const Batch b = make_batch(rng, ref.stage, {4, 4});
  // Both INPUTS before both LABELS: two micro-batches wait in two slots between forward and loss.
  c->send_message(MsgType::kBatchBegin,
                  net::BatchBegin{8, 2, net::Mode::kTrain, net::LossCode::kCrossEntropy, 0},
                  net::FrameMeta{0, 1, 0});
  ASSERT_EQ(c->receive().type(), MsgType::kAck);
  for (uint16_t m = 0; m < 2; ++m) {
    c->send_message(MsgType::kInputs, net::TensorHead{4, 64}, net::FrameMeta{0, 1, m},
                    b.x.data() + m * 4 * 64, 4 * 64 * 4);
  }
  for (uint16_t m = 0; m < 2; ++m) {
    c->send_message(MsgType::kLabels, net::LabelsHead{4}, net::FrameMeta{0, 1, m},
                    b.y.data() + m * 4, 16);
  }
  std::vector<float> loss(2);
  for (int i = 0; i < 4; ++i) {
    const Received r = c->receive();
    ASSERT_TRUE(r.ok());
    if (r.type() == MsgType::kMetrics) {
      net::Metrics x{};
      net::decode(r.fixed.data(), &x);
      loss[r.header.micro_batch] = x.loss_sum;
    }
  }
  c->send_message(MsgType::kStep, net::Step{0.05f, 0.9f, 1e-3f}, net::FrameMeta{0, 1, 0});
  ASSERT_EQ(c->receive().type(), MsgType::kAck);
  const BatchResult want = reference_batch(ref.stage, b, false, LossKind::kCrossEntropy);
  EXPECT_EQ(loss, want.loss_sum);
  expect_same_tensors(*c, ref.stage);
}

TEST(NodeTraining, WeightsRoundTripInChunksThatFit) {
  const std::vector<uint8_t> blob = test::golden("mlp_whole");
  TestNode node(blob);
  ASSERT_TRUE(node.started());
  // A coordinator that takes at most 512-byte payloads: 124 floats per WEIGHTS.
  auto c = test::connect_coordinator(node, 512);
  const uint32_t count = node.stage().layout().tensors[0].count;
  ASSERT_EQ(count, 16u * 12u);
  c->send_message(MsgType::kGetWeights, net::GetWeights{0, net::TensorKind::kParameter, 0, 1000});
  const Received first = c->receive();
  net::WeightsHead head{};
  ASSERT_TRUE(first.ok() && net::decode(first.fixed.data(), &head));
  EXPECT_EQ(head.count, (512u - 16u) / 4u);
  EXPECT_EQ(head.total, count);

  std::vector<float> values(count), momentum(count);
  for (uint32_t i = 0; i < count; ++i) {
    values[i] = 0.001f * static_cast<float>(i) - 0.1f;
    momentum[i] = -0.5f * values[i];
  }
  for (auto [kind, data] : {std::make_pair(net::TensorKind::kParameter, &values),
                            std::make_pair(net::TensorKind::kMomentum, &momentum)}) {
    for (uint32_t offset = 0; offset < count; offset += 50) {
      const uint32_t n = std::min(50u, count - offset);
      c->send_message(MsgType::kSetWeights, net::WeightsHead{0, kind, offset, n, count},
                      net::kNoBatch, data->data() + offset, n * 4);
      const Received ack = c->receive();
      net::Ack a{};
      ASSERT_TRUE(ack.ok() && net::decode(ack.fixed.data(), &a)) << ack.reason();
      EXPECT_EQ(a.acked_type, MsgType::kSetWeights);
    }
    EXPECT_EQ(test::pull_tensor(*c, 0, count, kind), *data);
  }
  // The arena holds what was set (the node paused while the test looks).
  node.pause();
  EXPECT_EQ(std::memcmp(node.stage().weights(0).data, values.data(), count * 4), 0);
  node.resume();

  // Gradients are the node's own: never set. A wrong tensor or size is refused.
  const std::vector<float> ones(12, 1.0f);
  struct Case {
    net::WeightsHead head;
    ErrorCode code;
  };
  for (const Case& k :
       {Case{{1, net::TensorKind::kGradient, 0, 12, 12}, ErrorCode::kUnexpected},
        Case{{9, net::TensorKind::kParameter, 0, 12, 12}, ErrorCode::kUnexpected},
        Case{{1, net::TensorKind::kParameter, 0, 12, 13}, ErrorCode::kStageMismatch}}) {
    c->send_message(MsgType::kSetWeights, k.head, net::kNoBatch, ones.data(), 48);
    const Received r = c->receive();
    EXPECT_EQ(r.error_code(), k.code) << r.reason();
    EXPECT_TRUE(c->closed_by_peer());
    c = test::connect_coordinator(node, 512);
  }
  c->send_message(MsgType::kGetWeights, net::GetWeights{1, net::TensorKind::kParameter, 12, 1});
  EXPECT_EQ(c->receive().error_code(), ErrorCode::kUnexpected);  // offset past the end
}

TEST(NodeTraining, NoSetWeightsWhileABatchIsOpen) {
  TestNode node(test::golden("mlp_whole"));
  ASSERT_TRUE(node.started());
  auto c = test::connect_coordinator(node);
  c->send_message(MsgType::kBatchBegin,
                  net::BatchBegin{8, 1, net::Mode::kTrain, net::LossCode::kCrossEntropy, 0},
                  net::FrameMeta{0, 5, 0});
  ASSERT_EQ(c->receive().type(), MsgType::kAck);
  const std::vector<float> w(12, 0.0f);
  c->send_message(MsgType::kSetWeights, net::WeightsHead{1, net::TensorKind::kParameter, 0, 12, 12},
                  net::kNoBatch, w.data(), 48);
  EXPECT_EQ(c->receive().error_code(), ErrorCode::kUnexpected);
  // The coordinator's connection closed: the batch is dropped, the node idle again.
  const net::StatusReport s = test::status_of(node);
  EXPECT_EQ(s.state, net::NodeState::kIdle);
  EXPECT_EQ(s.batch, 5u);
  EXPECT_EQ(s.steps, 0u);
}

// The first answer of the batch that is not METRICS or ACK (an ERROR), after INPUTS and LABELS of
// one micro-batch and then STEP; a default Received if everything was answered normally.
Received batch_until_error(Client& c, uint32_t id, const Batch& b, uint32_t features, float lr) {
  const uint16_t n = static_cast<uint16_t>(b.y.size());
  c.send_message(MsgType::kBatchBegin,
                 net::BatchBegin{n, 1, net::Mode::kTrain, net::LossCode::kCrossEntropy, 3},
                 net::FrameMeta{0, id, 0});
  Received r = c.receive();
  if (r.type() != MsgType::kAck) return r;
  const net::FrameMeta meta{0, id, 0};
  c.send_message(MsgType::kInputs, net::TensorHead{n, features}, meta, b.x.data(),
                 uint32_t{n} * features * 4);
  c.send_message(MsgType::kLabels, net::LabelsHead{n}, meta, b.y.data(), uint32_t{n} * 4);
  for (int answers = 0; answers < 2; ++answers) {
    r = c.receive();
    if (r.type() != MsgType::kMetrics && r.type() != MsgType::kAck) return r;
  }
  c.send_message(MsgType::kStep, net::Step{lr, 0.0f, 0.0f}, meta);
  r = c.receive();
  return r.type() == MsgType::kAck ? Received{} : r;
}

// A NaN or infinity anywhere in a micro-batch's inputs stops the job with NON_FINITE within that
// batch (in forward, or in the weights after the step where a ReLU hid it), and the node will
// not train on until its weights are set again.
TEST(NodeTraining, NonFiniteInputsStopTheJobWithinTheirBatch) {
  const std::vector<uint8_t> blob = test::golden("mlp_whole");
  std::mt19937 rng(5);
  const float bad[] = {NAN, INFINITY, -INFINITY};
  for (int trial = 0; trial < 6; ++trial) {
    TestNode node(blob);
    ASSERT_TRUE(node.started());
    auto c = test::connect_coordinator(node);
    Batch b = make_batch(rng, node.stage(), {4});
    b.x[rng() % b.x.size()] = bad[trial % 3];
    const Received r = batch_until_error(*c, 1, b, node.stage().input_floats(), 0.05f);
    EXPECT_EQ(r.type(), MsgType::kError) << "trial " << trial;
    EXPECT_EQ(r.error_code(), ErrorCode::kNonFinite) << "trial " << trial << ": " << r.reason();
    EXPECT_NE(r.reason().find("batch 1, epoch 3"), std::string::npos) << r.reason();
    EXPECT_TRUE(c->closed_by_peer());
    auto again = test::connect_coordinator(node);
    const Batch ok = make_batch(rng, node.stage(), {4});
    const Received refused = batch_until_error(*again, 2, ok, node.stage().input_floats(), 0.05f);
    EXPECT_EQ(refused.error_code(), ErrorCode::kUnexpected) << refused.reason();
  }
}

// A step that overflows a weight (a learning rate far too large) is answered NON_FINITE.
TEST(NodeTraining, AStepThatOverflowsAWeightIsAnsweredNonFinite) {
  TestNode node(test::golden("mlp_whole"));
  ASSERT_TRUE(node.started());
  auto c = test::connect_coordinator(node);
  std::mt19937 rng(6);
  const Batch b = make_batch(rng, node.stage(), {4});
  const Received r = batch_until_error(*c, 1, b, node.stage().input_floats(), 3e38f);
  EXPECT_EQ(r.error_code(), ErrorCode::kNonFinite) << r.reason();
  EXPECT_NE(r.reason().find("after the step"), std::string::npos) << r.reason();
}

// SET_WEIGHTS with a NaN or infinity anywhere is refused, and the tensor must be set again.
TEST(NodeTraining, SetWeightsWithANonFiniteValueIsRefused) {
  TestNode node(test::golden("mlp_whole"));
  ASSERT_TRUE(node.started());
  const uint32_t count = node.stage().weights(1).count();  // a bias: one chunk
  for (uint32_t at : {0u, count / 2, count - 1}) {
    auto c = test::connect_coordinator(node);
    std::vector<float> w(count, 0.25f);
    w[at] = NAN;
    c->send_message(MsgType::kSetWeights,
                    net::WeightsHead{1, net::TensorKind::kParameter, 0, count, count},
                    net::kNoBatch, w.data(), count * 4);
    const Received r = c->receive();
    EXPECT_EQ(r.error_code(), ErrorCode::kNonFinite) << r.reason();
    EXPECT_NE(r.reason().find("element " + std::to_string(at)), std::string::npos) << r.reason();
    EXPECT_TRUE(c->closed_by_peer());
  }
  auto c = test::connect_coordinator(node);
  std::mt19937 rng(7);
  const Batch b = make_batch(rng, node.stage(), {4});
  EXPECT_EQ(batch_until_error(*c, 1, b, node.stage().input_floats(), 0.05f).error_code(),
            ErrorCode::kUnexpected);  // weights invalid: not one batch until they are set again
}

}  // namespace
}  // namespace nmcm::runtime
