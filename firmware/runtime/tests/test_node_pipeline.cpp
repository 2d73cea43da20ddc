// Two nodes, stage 0 and stage 1 of the digits CNN, connected to each other as a pipeline: they
// compute exactly what the whole model does, reach a neighbour that starts late, and survive
// losing it (the batch is dropped, the node keeps answering, the link comes back).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "node_client.h"

namespace nmcm::runtime {
namespace {

using net::ErrorCode;
using net::MsgType;
using test::Client;
using test::Received;
using test::TestNode;

constexpr uint32_t kInput = 64;  // 1 x 8 x 8
constexpr uint16_t kMicro = 4;

struct Cluster {
  std::unique_ptr<Client> first, last;
};

Cluster connect(const TestNode& first, const TestNode& last) {
  return Cluster{test::connect_coordinator(first), test::connect_coordinator(last)};
}

void begin(Cluster& c, uint32_t id, uint16_t size, uint16_t micro_batches, bool eval) {
  const net::BatchBegin b{size, micro_batches, eval ? net::Mode::kEval : net::Mode::kTrain,
                          net::LossCode::kCrossEntropy, 1};
  const net::FrameMeta meta{static_cast<uint16_t>(eval ? net::kFlagEval : 0), id, 0};
  for (Client* client : {c.first.get(), c.last.get()}) {
    client->send_message(MsgType::kBatchBegin, b, meta);
  }
  for (Client* client : {c.first.get(), c.last.get()}) {
    const Received ack = client->receive();
    ASSERT_EQ(ack.type(), MsgType::kAck) << ack.reason();
  }
}

// One batch of 8 samples in two micro-batches, both in flight at once (the window is the
// nodes' 2 slots); returns the loss sums of the METRICS.
std::vector<float> run_batch(Cluster& c, uint32_t id, const std::vector<float>& x,
                             const std::vector<int32_t>& y, bool eval) {
  begin(c, id, 8, 2, eval);
  const uint16_t flags = eval ? net::kFlagEval : 0;
  for (uint16_t m = 0; m < 2; ++m) {
    const net::FrameMeta meta{flags, id, m};
    c.first->send_message(MsgType::kInputs, net::TensorHead{kMicro, kInput}, meta,
                          x.data() + m * kMicro * kInput, kMicro * kInput * 4);
    c.last->send_message(MsgType::kLabels, net::LabelsHead{kMicro}, meta, y.data() + m * kMicro,
                         kMicro * 4);
  }
  std::vector<float> loss(2);
  for (int i = 0; i < 2; ++i) {
    const Received r = c.last->receive();
    EXPECT_EQ(r.type(), MsgType::kMetrics) << r.reason();
    net::Metrics metrics{};
    if (!r.ok() || !net::decode(r.fixed.data(), &metrics)) return loss;
    loss[r.header.micro_batch] = metrics.loss_sum;
  }
  for (int i = 0; i < 2; ++i) {
    const Received r = c.first->receive();
    EXPECT_EQ(r.type(), MsgType::kAck) << r.reason();
  }
  if (!eval) {
    for (Client* client : {c.first.get(), c.last.get()}) {
      client->send_message(MsgType::kStep, net::Step{0.05f, 0.9f, 1e-3f}, net::FrameMeta{0, id, 0});
    }
    for (Client* client : {c.first.get(), c.last.get()}) {
      EXPECT_EQ(client->receive().type(), MsgType::kAck);
    }
  }
  return loss;
}

std::vector<float> whole_batch(Stage& s, const std::vector<float>& x, const std::vector<int32_t>& y,
                               bool eval) {
  if (!eval) s.zero_grad();
  std::vector<float> loss;
  for (uint32_t m = 0; m < 2; ++m) {
    std::memcpy(s.input(0), x.data() + m * kMicro * kInput, kMicro * kInput * 4);
    std::memcpy(s.labels(0), y.data() + m * kMicro, kMicro * 4);
    EXPECT_TRUE(s.forward(0, kMicro).ok());
    LossResult r{};
    EXPECT_TRUE(s.loss_backward_seed(0, kMicro, 8, LossKind::kCrossEntropy, &r).ok());
    if (!eval) {
      EXPECT_TRUE(s.backward(0, kMicro).ok());
    }
    loss.push_back(r.loss_sum);
  }
  if (!eval) {
    EXPECT_TRUE(s.sgd_step(0.05f, 0.9f, 1e-3f).ok());
  }
  return loss;
}

void random_batch(std::mt19937& rng, std::vector<float>* x, std::vector<int32_t>* y) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int32_t> label(0, 9);
  x->resize(8 * kInput);
  for (float& v : *x) v = normal(rng);
  y->resize(8);
  for (int32_t& v : *y) v = label(rng);
}

bool wait_for_state(const TestNode& node, net::NodeState state, uint32_t timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    if (test::status_of(node).state == state) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST(NodePipeline, TwoStagesTrainExactlyLikeTheWholeModel) {
  TestNode last(test::golden("cnn_stage1"));
  ASSERT_TRUE(last.started());
  test::NodeOptions options;
  options.downstream_port = last.port();
  TestNode first(test::golden("cnn_stage0"), options);
  ASSERT_TRUE(first.started());
  const std::vector<uint8_t> whole_blob = test::golden("cnn_whole");
  std::vector<uint8_t> storage(1 << 20);
  const uintptr_t p = reinterpret_cast<uintptr_t>(storage.data());
  uint8_t* arena = storage.data() + (16 - p % 16) % 16;
  Stage whole;
  ASSERT_TRUE(
      whole.load(whole_blob.data(), whole_blob.size(), arena, storage.size() - 16, nullptr).ok());
  Cluster c = connect(first, last);
  std::mt19937 rng(7);
  std::vector<float> x;
  std::vector<int32_t> y;
  for (uint32_t id = 1; id <= 3; ++id) {
    random_batch(rng, &x, &y);
    EXPECT_EQ(run_batch(c, id, x, y, false), whole_batch(whole, x, y, false)) << "batch " << id;
  }
  random_batch(rng, &x, &y);
  EXPECT_EQ(run_batch(c, 4, x, y, true), whole_batch(whole, x, y, true));
  // Whole-model tensors 0, 1 (conv) are stage 0's; 2, 3 (linear) stage 1's.
  for (uint32_t t = 0; t < 4; ++t) {
    Client& node = t < 2 ? *c.first : *c.last;
    const TensorView want = whole.weights(t);
    const std::vector<float> got =
        test::pull_tensor(node, static_cast<uint16_t>(t % 2), want.count());
    for (uint32_t i = 0; i < want.count(); ++i)
      ASSERT_EQ(got[i], want.data[i]) << t << "[" << i << "]";
  }
  const net::StatusReport s0 = test::status_of(first), s1 = test::status_of(last);
  EXPECT_EQ(s0.steps, 3u);
  EXPECT_EQ(s1.steps, 3u);
  EXPECT_TRUE(std::isnan(s0.last_loss));  // only the last stage knows the loss
  EXPECT_FALSE(std::isnan(s1.last_loss));
}

TEST(NodePipeline, ActivationsWaitForADownstreamThatIsNotUpYet) {
  // Reserve a port for the late neighbour.
  uint16_t port = 0;
  {
    net::PosixListener probe;
    ASSERT_EQ(probe.listen("127.0.0.1", 0), net::IoStatus::kOk);
    port = probe.port();
  }
  test::NodeOptions options;
  options.downstream_port = port;
  options.timeouts.connect_retry_ms = 400;  // long enough for INPUTS to arrive before the link
  TestNode first(test::golden("cnn_stage0"), options);
  ASSERT_TRUE(first.started());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // its first attempt is refused
  test::NodeOptions late_options;
  late_options.listen_port = port;
  TestNode last(test::golden("cnn_stage1"), late_options);
  ASSERT_TRUE(last.started());
  Cluster c = connect(first, last);
  std::mt19937 rng(1);
  std::vector<float> x;
  std::vector<int32_t> y;
  random_batch(rng, &x, &y);
  const std::vector<float> loss = run_batch(c, 1, x, y, false);
  EXPECT_GT(loss[0], 0.0f);
  EXPECT_EQ(test::status_of(first).steps, 1u);
}

TEST(NodePipeline, LosingTheDownstreamNeighbourDropsTheBatchAndTheNodeKeepsServing) {
  auto last = std::make_unique<TestNode>(test::golden("cnn_stage1"));
  ASSERT_TRUE(last->started());
  const uint16_t port = last->port();
  test::NodeOptions options;
  options.downstream_port = port;
  TestNode first(test::golden("cnn_stage0"), options);
  ASSERT_TRUE(first.started());
  std::mt19937 rng(2);
  std::vector<float> x;
  std::vector<int32_t> y;
  random_batch(rng, &x, &y);
  {
    Cluster c = connect(first, *last);
    begin(c, 1, 8, 2, false);
    c.first->send_message(MsgType::kInputs, net::TensorHead{kMicro, kInput},
                          net::FrameMeta{0, 1, 0}, x.data(), kMicro * kInput * 4);
    ASSERT_TRUE(wait_for_state(first, net::NodeState::kTraining, 1000));
    last.reset();  // the neighbour dies mid-batch
    ASSERT_TRUE(wait_for_state(first, net::NodeState::kIdle, 2000));
    const net::StatusReport s = test::status_of(first);
    EXPECT_EQ(s.batch, 1u);
    EXPECT_EQ(s.steps, 0u);
    // The coordinator's connection is still served; the batch is gone, and says why.
    c.first->send_message(MsgType::kInputs, net::TensorHead{kMicro, kInput},
                          net::FrameMeta{0, 1, 1}, x.data(), kMicro * kInput * 4);
    const Received r = c.first->receive();
    EXPECT_EQ(r.error_code(), ErrorCode::kUnexpected);
    EXPECT_NE(r.reason().find("downstream"), std::string::npos) << r.reason();
  }
  // The neighbour comes back on its port: the link is made again and batches run.
  test::NodeOptions back;
  back.listen_port = port;
  last = std::make_unique<TestNode>(test::golden("cnn_stage1"), back);
  ASSERT_TRUE(last->started());
  Cluster c = connect(first, *last);
  EXPECT_EQ(run_batch(c, 2, x, y, false).size(), 2u);
  EXPECT_EQ(test::status_of(first).steps, 1u);
}

// Stage 0 with a test-played stage 1: the gradient of micro-batch 0 arrives in two pieces, and
// the INPUTS of micro-batch 1 arrive in between. Stage::grad_in() is a transient buffer that the
// plan may share with forward's transient activations, so the forward of micro-batch 1 must wait
// until the gradient has landed; the weights then equal the stage driven by hand.
TEST(NodePipeline, AForwardWaitsWhileAGradientIsArriving) {
  net::PosixListener fake_listener;
  ASSERT_EQ(fake_listener.listen("127.0.0.1", 0), net::IoStatus::kOk);
  test::NodeOptions options;
  options.downstream_port = fake_listener.port();
  const std::vector<uint8_t> blob = test::golden("cnn_stage0");
  TestNode node(blob, options);
  ASSERT_TRUE(node.started());
  Client fake;
  ASSERT_TRUE(fake.accept(fake_listener));
  const Received hello = fake.receive();
  ASSERT_EQ(hello.type(), MsgType::kHello);
  net::Hello ack{};
  ack.role = net::Role::kNode;
  ack.stage_index = 1;
  ack.stage_count = 2;
  ack.micro_batch = kMicro;
  ack.max_payload = 8 + kMicro * 128 * 4;
  ack.input_features = 128;
  ack.output_features = 10;
  ack.slots = 2;
  std::memcpy(ack.model_hash, node.model_hash(), net::kHashSize);
  std::strcpy(ack.cluster, test::kCluster);
  ASSERT_EQ(fake.send_message(MsgType::kHelloAck, ack), net::IoStatus::kOk);

  std::mt19937 rng(9);
  std::vector<float> x;
  std::vector<int32_t> y;
  random_batch(rng, &x, &y);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> grads(2 * kMicro * 128);
  for (float& g : grads) g = normal(rng);

  auto coordinator = test::connect_coordinator(node);
  coordinator->send_message(
      MsgType::kBatchBegin,
      net::BatchBegin{8, 2, net::Mode::kTrain, net::LossCode::kCrossEntropy, 0},
      net::FrameMeta{0, 1, 0});
  ASSERT_EQ(coordinator->receive().type(), MsgType::kAck);
  coordinator->send_message(MsgType::kInputs, net::TensorHead{kMicro, kInput},
                            net::FrameMeta{0, 1, 0}, x.data(), kMicro * kInput * 4);
  const Received act0 = fake.receive();
  ASSERT_EQ(act0.type(), MsgType::kActivations);

  // GRADIENTS as raw frames (numbered after the HELLO_ACK): micro-batch 0's is sent in two
  // pieces around micro-batch 1's INPUTS.
  auto gradients = [&](uint32_t sequence, uint16_t m) {
    const uint32_t size = 8 + kMicro * 128 * 4;
    std::vector<uint8_t> f(net::kHeaderSize + size + net::kCrcSize);
    net::encode_header(net::FrameHeader{MsgType::kGradients, 0, sequence, 1, m, size}, f.data());
    net::encode(net::TensorHead{kMicro, 128}, f.data() + net::kHeaderSize);
    std::memcpy(f.data() + net::kHeaderSize + 8, grads.data() + m * kMicro * 128, kMicro * 128 * 4);
    net::FrameCrc crc;
    crc.update(f.data(), net::kHeaderSize + size);
    crc.put(f.data() + net::kHeaderSize + size);
    return f;
  };
  const std::vector<uint8_t> g0 = gradients(1, 0);
  const auto half = static_cast<std::ptrdiff_t>(g0.size() / 2);
  ASSERT_EQ(fake.send_raw(std::vector<uint8_t>(g0.begin(), g0.begin() + half)), net::IoStatus::kOk);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  coordinator->send_message(MsgType::kInputs, net::TensorHead{kMicro, kInput},
                            net::FrameMeta{0, 1, 1}, x.data() + kMicro * kInput,
                            kMicro * kInput * 4);
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  ASSERT_EQ(fake.send_raw(std::vector<uint8_t>(g0.begin() + half, g0.end())), net::IoStatus::kOk);
  const Received act1 = fake.receive();
  ASSERT_EQ(act1.type(), MsgType::kActivations);
  EXPECT_EQ(act1.header.micro_batch, 1);
  ASSERT_EQ(fake.send_raw(gradients(2, 1)), net::IoStatus::kOk);
  for (uint16_t m = 0; m < 2; ++m) {
    const Received r = coordinator->receive();
    ASSERT_EQ(r.type(), MsgType::kAck) << r.reason();
    EXPECT_EQ(r.header.micro_batch, m);
  }
  coordinator->send_message(MsgType::kStep, net::Step{0.05f, 0.9f, 1e-3f}, net::FrameMeta{0, 1, 0});
  ASSERT_EQ(coordinator->receive().type(), MsgType::kAck);

  // The same by hand: forward 0, backward 0, forward 1, backward 1, step.
  std::vector<uint8_t> storage(1 << 20);
  const uintptr_t p = reinterpret_cast<uintptr_t>(storage.data());
  Stage ref;
  ASSERT_TRUE(ref.load(blob.data(), blob.size(), storage.data() + (16 - p % 16) % 16,
                       storage.size() - 16, nullptr)
                  .ok());
  ref.zero_grad();
  for (uint32_t m = 0; m < 2; ++m) {
    std::memcpy(ref.input(m), x.data() + m * kMicro * kInput, kMicro * kInput * 4);
    ASSERT_TRUE(ref.forward(m, kMicro).ok());
    const Received& act = m == 0 ? act0 : act1;
    EXPECT_EQ(std::memcmp(act.data.data(), ref.output(m), kMicro * 128 * 4), 0);
    std::memcpy(ref.grad_in(), grads.data() + m * kMicro * 128, kMicro * 128 * 4);
    ASSERT_TRUE(ref.backward(m, kMicro).ok());
  }
  ASSERT_TRUE(ref.sgd_step(0.05f, 0.9f, 1e-3f).ok());
  for (uint16_t t = 0; t < 2; ++t) {
    const TensorView want = ref.weights(t);
    const std::vector<float> got = test::pull_tensor(*coordinator, t, want.count());
    for (uint32_t i = 0; i < want.count(); ++i) {
      ASSERT_EQ(got[i], want.data[i]) << "tensor " << t << "[" << i << "]";
    }
  }
}

}  // namespace
}  // namespace nmcm::runtime
