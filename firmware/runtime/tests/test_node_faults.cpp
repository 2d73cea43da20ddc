// Frames a node must refuse (docs/protocol.md, "Checks a receiver makes"): each is answered with
// ERROR and a closed connection, never lets an unchecked byte count, and leaves the node serving.
// And every wait has a timeout.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <iterator>
#include <thread>
#include <vector>

#include "nmcm/net/frame.h"
#include "node_client.h"

namespace nmcm::runtime {
namespace {

using net::ErrorCode;
using net::MsgType;
using test::Client;
using test::Received;
using test::TestNode;

// A whole frame: header (with `sequence`), payload, frame CRC.
std::vector<uint8_t> frame(MsgType type, uint32_t sequence, const std::vector<uint8_t>& payload,
                           const net::FrameMeta& meta = net::kNoBatch) {
  std::vector<uint8_t> out(net::kHeaderSize + payload.size() + net::kCrcSize);
  net::encode_header(net::FrameHeader{type, meta.flags, sequence, meta.batch, meta.micro_batch,
                                      static_cast<uint32_t>(payload.size())},
                     out.data());
  if (!payload.empty()) std::memcpy(out.data() + net::kHeaderSize, payload.data(), payload.size());
  net::FrameCrc crc;
  crc.update(out.data(), net::kHeaderSize + payload.size());
  crc.put(out.data() + net::kHeaderSize + payload.size());
  return out;
}

template <typename Fixed>
std::vector<uint8_t> payload(const Fixed& fixed, const void* data = nullptr, size_t size = 0) {
  std::vector<uint8_t> out(Fixed::kSize + size);
  net::encode(fixed, out.data());
  if (size > 0) std::memcpy(out.data() + Fixed::kSize, data, size);
  return out;
}

void expect_error_and_close(Client& c, ErrorCode code) {
  const Received r = c.receive();
  EXPECT_EQ(r.type(), MsgType::kError);
  EXPECT_EQ(r.error_code(), code) << r.reason();
  EXPECT_TRUE(c.closed_by_peer());
}

void begin_batch(Client& c, uint32_t id, uint16_t size, uint16_t micro_batches) {
  c.send_message(
      MsgType::kBatchBegin,
      net::BatchBegin{size, micro_batches, net::Mode::kTrain, net::LossCode::kCrossEntropy, 0},
      net::FrameMeta{0, id, 0});
  const Received ack = c.receive();
  ASSERT_EQ(ack.type(), MsgType::kAck) << ack.reason();
}

TEST(NodeFaults, OversizeFrameIsRefusedBeforeItsPayload) {
  TestNode node(test::golden("cnn_whole"));
  ASSERT_TRUE(node.started());
  auto c = test::connect_coordinator(node);
  begin_batch(*c, 1, 8, 2);
  node.pause();
  const std::vector<uint8_t> before = node.arena();
  node.resume();
  // INPUTS of 5 samples: one more than the node holds, so one byte past its receive limit.
  const std::vector<float> x(5 * 64, 7.0f);
  const std::vector<uint8_t> bytes =
      frame(MsgType::kInputs, c->next_sequence(),
            payload(net::TensorHead{5, 64}, x.data(), x.size() * 4), net::FrameMeta{0, 1, 0});
  c->send_raw(bytes);
  const Received r = c->receive();
  EXPECT_EQ(r.error_code(), ErrorCode::kTooLarge) << r.reason();
  net::ErrorHead head{};
  ASSERT_TRUE(net::decode(r.fixed.data(), &head));
  EXPECT_EQ(head.detail, 8u + 5 * 64 * 4);  // the offending length
  EXPECT_TRUE(c->closed_by_peer());
  node.pause();
  EXPECT_EQ(node.arena(), before);  // not one byte of it reached the arena
  node.resume();
  const net::StatusReport s = test::status_of(node);
  EXPECT_EQ(s.frames_rejected, 1u);
  EXPECT_EQ(s.state, net::NodeState::kIdle);  // the coordinator left: its batch is dropped
}

TEST(NodeFaults, BadCrcDropsTheMicroBatchAndTouchesNoWeights) {
  TestNode node(test::golden("cnn_whole"));
  ASSERT_TRUE(node.started());
  auto c = test::connect_coordinator(node);
  begin_batch(*c, 3, 4, 1);
  node.pause();
  std::vector<float> weights, grads;
  for (uint32_t t = 0; t < node.stage().tensor_count(); ++t) {
    const TensorView w = node.stage().weights(t), g = node.stage().grads(t);
    weights.insert(weights.end(), w.data, w.data + w.count());
    grads.insert(grads.end(), g.data, g.data + g.count());
  }
  node.resume();
  const std::vector<float> x(4 * 64, 0.5f);
  std::vector<uint8_t> bytes =
      frame(MsgType::kInputs, c->next_sequence(),
            payload(net::TensorHead{4, 64}, x.data(), x.size() * 4), net::FrameMeta{0, 3, 0});
  bytes[net::kHeaderSize + 20] ^= 0x10;  // a data byte: only the frame CRC can tell
  c->send_raw(bytes);
  const Received r = c->receive();
  EXPECT_EQ(r.error_code(), ErrorCode::kBadCrc) << r.reason();
  EXPECT_EQ(r.header.batch, 3u);  // the header was sound: the error names the frame's batch
  EXPECT_TRUE(c->closed_by_peer());
  node.pause();
  std::vector<float> weights_after, grads_after;
  for (uint32_t t = 0; t < node.stage().tensor_count(); ++t) {
    const TensorView w = node.stage().weights(t), g = node.stage().grads(t);
    weights_after.insert(weights_after.end(), w.data, w.data + w.count());
    grads_after.insert(grads_after.end(), g.data, g.data + g.count());
  }
  node.resume();
  EXPECT_EQ(weights_after, weights);
  EXPECT_EQ(grads_after, grads);
  const net::StatusReport s = test::status_of(node);
  EXPECT_EQ(s.state, net::NodeState::kIdle);
  EXPECT_EQ(s.batch, 3u);
  EXPECT_EQ(s.frames_rejected, 1u);
  // The dropped batch is gone for good; a new one runs.
  auto again = test::connect_coordinator(node);
  again->send_message(MsgType::kInputs, net::TensorHead{4, 64}, net::FrameMeta{0, 3, 0}, x.data(),
                      4 * 64 * 4);
  const Received late = again->receive();
  EXPECT_EQ(late.error_code(), ErrorCode::kUnexpected);
  EXPECT_NE(late.reason().find("dropped"), std::string::npos) << late.reason();
}

TEST(NodeFaults, BadSetWeightsChunkFailsTheNodeUntilEveryTensorIsSetAgain) {
  TestNode node(test::golden("mlp_whole"));
  ASSERT_TRUE(node.started());
  auto c = test::connect_coordinator(node);
  const std::vector<float> w(12, 0.25f);
  std::vector<uint8_t> bytes =
      frame(MsgType::kSetWeights, c->next_sequence(),
            payload(net::WeightsHead{1, net::TensorKind::kParameter, 0, 12, 12}, w.data(), 48));
  bytes[bytes.size() - 1] ^= 0xFF;  // the CRC itself
  c->send_raw(bytes);
  expect_error_and_close(*c, ErrorCode::kBadCrc);
  EXPECT_EQ(test::status_of(node).state, net::NodeState::kFailed);

  c = test::connect_coordinator(node);
  c->send_message(MsgType::kBatchBegin,
                  net::BatchBegin{8, 1, net::Mode::kTrain, net::LossCode::kCrossEntropy, 0},
                  net::FrameMeta{0, 1, 0});
  expect_error_and_close(*c, ErrorCode::kUnexpected);

  // Every tensor set again (in chunks under the node's 520-byte limit): batches are taken again.
  c = test::connect_coordinator(node);
  for (uint16_t t = 0; t < node.stage().tensor_count(); ++t) {
    const uint32_t count = node.stage().layout().tensors[t].count;
    const std::vector<float> values(count, 0.01f);
    for (uint32_t offset = 0; offset < count; offset += 100) {
      const uint32_t n = std::min(100u, count - offset);
      c->send_message(MsgType::kSetWeights,
                      net::WeightsHead{t, net::TensorKind::kParameter, offset, n, count},
                      net::kNoBatch, values.data() + offset, n * 4);
      ASSERT_EQ(c->receive().type(), MsgType::kAck);
    }
    if (t + 1u < node.stage().tensor_count()) {
      EXPECT_EQ(test::status_of(node).state, net::NodeState::kFailed);
    }
  }
  EXPECT_EQ(test::status_of(node).state, net::NodeState::kIdle);
  begin_batch(*c, 2, 8, 1);
}

TEST(NodeFaults, MessagesTheStateCannotTakeAreRefused) {
  const std::vector<uint8_t> blob = test::golden("mlp_whole");  // 16 -> 12 -> 5, 8 samples, 1 slot
  TestNode node(blob);
  ASSERT_TRUE(node.started());
  const std::vector<float> x(8 * 16, 0.1f);
  const std::vector<int32_t> y(8, 1);
  struct Case {
    const char* what;
    bool open_batch;
    MsgType type;
    std::vector<uint8_t> payload;
    net::FrameMeta meta;
    ErrorCode code;
  };
  const Case cases[] = {
      {"INPUTS without a batch",
       false,
       MsgType::kInputs,
       payload(net::TensorHead{8, 16}, x.data(), 8 * 16 * 4),
       {0, 1, 0},
       ErrorCode::kUnexpected},
      {"STEP before backward",
       true,
       MsgType::kStep,
       payload(net::Step{0.1f, 0.9f, 0.0f}),
       {0, 1, 0},
       ErrorCode::kUnexpected},
      {"INPUTS of another batch",
       true,
       MsgType::kInputs,
       payload(net::TensorHead{8, 16}, x.data(), 8 * 16 * 4),
       {0, 2, 0},
       ErrorCode::kUnexpected},
      {"INPUTS flagged EVAL in training",
       true,
       MsgType::kInputs,
       payload(net::TensorHead{8, 16}, x.data(), 8 * 16 * 4),
       {net::kFlagEval, 1, 0},
       ErrorCode::kUnexpected},
      {"micro-batch outside the batch",
       true,
       MsgType::kInputs,
       payload(net::TensorHead{8, 16}, x.data(), 8 * 16 * 4),
       {0, 1, 3},
       ErrorCode::kUnexpected},
      {"features of another stage",
       true,
       MsgType::kInputs,
       payload(net::TensorHead{8, 15}, x.data(), 8 * 15 * 4),
       {0, 1, 0},
       ErrorCode::kStageMismatch},
      {"label outside the classes",
       true,
       MsgType::kLabels,
       payload(net::LabelsHead{1}, std::vector<int32_t>{5}.data(), 4),
       {0, 1, 0},
       ErrorCode::kStageMismatch},
      {"GRADIENTS to the last stage",
       true,
       MsgType::kGradients,
       payload(net::TensorHead{8, 5}, x.data(), 8 * 5 * 4),
       {0, 1, 0},
       ErrorCode::kUnexpected},
      {"WEIGHTS to a node",
       false,
       MsgType::kWeights,
       payload(net::WeightsHead{0, net::TensorKind::kParameter, 0, 1, 192}, x.data(), 4),
       {0, 0, 0},
       ErrorCode::kUnexpected},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.what);
    auto c = test::connect_coordinator(node);
    if (k.open_batch) begin_batch(*c, 1, 8, 1);
    c->send_raw(frame(k.type, c->next_sequence(), k.payload, k.meta));
    expect_error_and_close(*c, k.code);
  }
  {
    SCOPED_TRACE("sequence gap");
    auto c = test::connect_coordinator(node);
    c->send_raw(frame(MsgType::kStatusRequest, c->next_sequence() + 1, {}));
    expect_error_and_close(*c, ErrorCode::kSequence);
  }
  {
    SCOPED_TRACE("a second micro-batch with the only slot taken");
    auto c = test::connect_coordinator(node);
    begin_batch(*c, 1, 16, 2);
    c->send_message(MsgType::kInputs, net::TensorHead{8, 16}, net::FrameMeta{0, 1, 0}, x.data(),
                    8 * 16 * 4);
    c->send_message(MsgType::kInputs, net::TensorHead{8, 16}, net::FrameMeta{0, 1, 1}, x.data(),
                    8 * 16 * 4);
    expect_error_and_close(*c, ErrorCode::kUnexpected);
  }
  const net::StatusReport s = test::status_of(node);
  EXPECT_EQ(s.frames_rejected, std::size(cases) + 2);
  EXPECT_EQ(s.state, net::NodeState::kIdle);
}

TEST(NodeFaults, EveryWaitHasATimeout) {
  test::NodeOptions options;
  options.timeouts.hello_ms = 150;
  options.timeouts.frame_ms = 150;
  options.timeouts.batch_ms = 300;
  TestNode node(test::golden("mlp_whole"), options);
  ASSERT_TRUE(node.started());
  using Clock = std::chrono::steady_clock;
  {
    // Connected, silent: closed after the HELLO timeout.
    Client c;
    ASSERT_TRUE(c.connect(node.port()));
    const auto t0 = Clock::now();
    EXPECT_TRUE(c.closed_by_peer(3000));
    EXPECT_LT(Clock::now() - t0, std::chrono::milliseconds(1500));
  }
  {
    // Half a frame, then nothing: ERROR TIMEOUT after the inner-frame timeout.
    auto c = test::connect_coordinator(node);
    std::vector<uint8_t> bytes = frame(MsgType::kStatusRequest, c->next_sequence(), {});
    bytes.resize(10);
    c->send_raw(bytes);
    const Received r = c->receive();
    EXPECT_EQ(r.error_code(), ErrorCode::kTimeout) << r.reason();
    EXPECT_TRUE(c->closed_by_peer());
  }
  {
    // A batch opened and abandoned: ERROR TIMEOUT after the batch timeout, the batch dropped.
    auto c = test::connect_coordinator(node);
    begin_batch(*c, 9, 8, 1);
    const auto t0 = Clock::now();
    const Received r = c->receive(3000);
    EXPECT_EQ(r.error_code(), ErrorCode::kTimeout) << r.reason();
    EXPECT_EQ(r.header.batch, 9u);
    EXPECT_GE(Clock::now() - t0, std::chrono::milliseconds(250));
    EXPECT_TRUE(c->closed_by_peer());
  }
  const net::StatusReport s = test::status_of(node);
  EXPECT_EQ(s.state, net::NodeState::kIdle);
  EXPECT_EQ(s.batch, 9u);
}

}  // namespace
}  // namespace nmcm::runtime
