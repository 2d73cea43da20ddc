// Fixed parts: every struct survives encode/decode, reserved bytes go out as zero, and decode
// refuses what the spec calls malformed.
#include "nmcm/net/payload.h"

#include <gtest/gtest.h>

#include <cstring>

#include "net_test_util.h"

namespace nmcm::net {
namespace {

TEST(Payload, HelloRoundTripsAndCutsTheClusterName) {
  Hello h{};
  h.role = Role::kNode;
  h.stage_index = 1;
  h.stage_count = 2;
  h.micro_batch = 8;
  h.max_payload = 2056;
  h.input_features = 64;
  h.output_features = 10;
  h.slots = 2;
  h.tensor_count = 4;
  for (uint32_t i = 0; i < kHashSize; ++i) h.model_hash[i] = static_cast<uint8_t>(i);
  std::memset(h.cluster, 'c', sizeof h.cluster);  // 64 characters, no NUL: only 63 may go out
  uint8_t raw[Hello::kSize];
  std::memset(raw, 0xEE, sizeof raw);
  encode(h, raw);
  EXPECT_EQ(raw[1], 0);  // reserved
  for (int i = 24; i < 32; ++i) EXPECT_EQ(raw[i], 0) << i;
  EXPECT_EQ(raw[127], 0);
  Hello back{};
  ASSERT_TRUE(decode(raw, &back));
  EXPECT_EQ(back.role, Role::kNode);
  EXPECT_EQ(back.max_payload, 2056u);
  EXPECT_EQ(back.output_features, 10u);
  EXPECT_EQ(back.tensor_count, 4u);
  EXPECT_EQ(0, std::memcmp(back.model_hash, h.model_hash, kHashSize));
  EXPECT_EQ(std::strlen(back.cluster), 63u);
}

TEST(Payload, HelloDecodeAlwaysTerminatesTheClusterName) {
  uint8_t raw[Hello::kSize];
  std::memset(raw, 'x', sizeof raw);
  raw[0] = 1;
  Hello h{};
  ASSERT_TRUE(decode(raw, &h));
  EXPECT_EQ(std::strlen(h.cluster), kClusterFieldSize - 1);
}

TEST(Payload, StatusRoundTrips) {
  StatusReport s{};
  s.stage_index = 3;
  s.stage_count = 4;
  s.state = NodeState::kEvaluating;
  s.last_loss = 0.25f;
  s.tick_hz = 1000000000u;
  s.compute_ticks = 0x0123456789ABCDEFull;
  s.bytes_received = 1ull << 40;
  s.uptime_ms = 77;
  s.firmware_hash[15] = 0x5A;
  uint8_t raw[StatusReport::kSize];
  encode(s, raw);
  StatusReport back{};
  ASSERT_TRUE(decode(raw, &back));
  EXPECT_EQ(back.state, NodeState::kEvaluating);
  EXPECT_EQ(back.last_loss, 0.25f);
  EXPECT_EQ(back.compute_ticks, 0x0123456789ABCDEFull);
  EXPECT_EQ(back.bytes_received, 1ull << 40);
  EXPECT_EQ(back.uptime_ms, 77u);
  EXPECT_EQ(back.firmware_hash[15], 0x5A);
}

TEST(Payload, SmallStructsRoundTrip) {
  uint8_t raw[16];
  BatchBegin bb{16, 2, Mode::kEval, LossCode::kMse, 9}, bb2{};
  encode(bb, raw);
  ASSERT_TRUE(decode(raw, &bb2));
  EXPECT_EQ(bb2.batch_size, 16u);
  EXPECT_EQ(bb2.micro_batches, 2u);
  EXPECT_EQ(bb2.mode, Mode::kEval);
  EXPECT_EQ(bb2.loss, LossCode::kMse);
  EXPECT_EQ(bb2.epoch, 9u);

  Step st{0.05f, 0.9f, 1e-4f}, st2{};
  encode(st, raw);
  ASSERT_TRUE(decode(raw, &st2));
  EXPECT_EQ(st2.lr, 0.05f);
  EXPECT_EQ(st2.momentum, 0.9f);
  EXPECT_EQ(st2.weight_decay, 1e-4f);

  Metrics m{5.5f, 3, 8}, m2{};
  encode(m, raw);
  ASSERT_TRUE(decode(raw, &m2));
  EXPECT_EQ(m2.loss_sum, 5.5f);
  EXPECT_EQ(m2.correct, 3u);
  EXPECT_EQ(m2.samples, 8u);

  WeightsHead w{7, TensorKind::kMomentum, 10, 5, 15}, w2{};
  encode(w, raw);
  ASSERT_TRUE(decode(raw, &w2));
  EXPECT_EQ(w2.tensor, 7u);
  EXPECT_EQ(w2.kind, TensorKind::kMomentum);
  EXPECT_EQ(w2.offset + w2.count, w2.total);

  Ack a{MsgType::kSetWeights, 12}, a2{};
  encode(a, raw);
  ASSERT_TRUE(decode(raw, &a2));
  EXPECT_EQ(a2.acked_type, MsgType::kSetWeights);
  EXPECT_EQ(a2.acked_sequence, 12u);
}

TEST(Payload, DecodeRefusesOutOfRangeFields) {
  uint8_t raw[Hello::kSize] = {};
  Hello h{};
  raw[0] = 5;
  EXPECT_FALSE(decode(raw, &h));
  raw[0] = 0;
  EXPECT_FALSE(decode(raw, &h));

  uint8_t small[16] = {};
  BatchBegin bb{};
  small[4] = 2;
  EXPECT_FALSE(decode(small, &bb));

  std::memset(small, 0, sizeof small);
  WeightsHead w{};
  encode(WeightsHead{0, TensorKind::kParameter, 8, 3, 10}, small);
  EXPECT_FALSE(decode(small, &w));  // offset + count > total
  encode(WeightsHead{0, TensorKind::kParameter, 0xFFFFFFFF, 2, 10}, small);
  EXPECT_FALSE(decode(small, &w));  // and without wrapping around
  TensorHead t{};
  encode(TensorHead{0, 3}, small);
  EXPECT_FALSE(decode(small, &t));
  ErrorHead e{};
  encode(ErrorHead{ErrorCode::kNone, 0}, small);
  EXPECT_FALSE(decode(small, &e));  // 0 is "no error", never sent
}

TEST(Payload, CheckFixedComparesTheDataSize) {
  uint8_t raw[16] = {};
  encode(TensorHead{2, 3}, raw);
  EXPECT_EQ(check_fixed(MsgType::kInputs, raw, 24), ErrorCode::kNone);
  EXPECT_EQ(check_fixed(MsgType::kInputs, raw, 20), ErrorCode::kMalformed);
  // 65535 samples x 2^30 features would wrap a 32-bit product to 0.
  encode(TensorHead{0xFFFF, 0x40000000u}, raw);
  EXPECT_EQ(check_fixed(MsgType::kActivations, raw, 0), ErrorCode::kMalformed);
  encode(ErrorHead{ErrorCode::kBusy, 0}, raw);
  EXPECT_EQ(check_fixed(MsgType::kError, raw, kMaxErrorText), ErrorCode::kNone);
  EXPECT_EQ(check_fixed(MsgType::kError, raw, kMaxErrorText + 1), ErrorCode::kMalformed);
}

}  // namespace
}  // namespace nmcm::net
