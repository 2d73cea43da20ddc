// The paced sim node's parts (pace.h): the table nmcm writes, the pacer's timeline, and the
// transport that finds frames in the byte stream to charge each its modelled time.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "nmcm/net/frame_io.h"
#include "pace.h"

namespace nmcm::app {
namespace {

using net::IoResult;
using net::IoStatus;

constexpr const char* kTable =
    "# a stage of two layers\n"
    "scale 2\n"
    "layers 2\n"
    "forward 0 1e-5 2e-6\n"
    "forward 1 3e-5 4e-6 1e-6 2e-6 3e-6   # after a comment\n"
    "backward 0 5e-5 6e-6\n"
    "backward 1 0 0\n"
    "loss 7e-6 8e-7\n"
    "step 9e-4\n"
    "send 1e-5 1e-6\n"
    "receive 2e-5 2e-6\n"
    "wire 100000000 1460 78\n";

TEST(PaceTable, ReadsEveryDirective) {
  PaceTable t;
  char error[120] = {};
  ASSERT_TRUE(parse_pace_table(kTable, &t, error, sizeof error)) << error;
  EXPECT_EQ(t.scale, 2);
  EXPECT_EQ(t.layers, 2u);
  EXPECT_DOUBLE_EQ(t.work_s(StagePhase::kForward, 0, 10), 1e-5 + 10 * 2e-6);
  // With the figures of 1, 2 and 3 samples mod 4: a micro-batch of 10 adds the one of 2.
  EXPECT_DOUBLE_EQ(t.work_s(StagePhase::kForward, 1, 10), 3e-5 + 10 * 4e-6 + 2e-6);
  EXPECT_DOUBLE_EQ(t.work_s(StagePhase::kForward, 1, 12), 3e-5 + 12 * 4e-6);
  EXPECT_DOUBLE_EQ(t.work_s(StagePhase::kForward, 1, 7), 3e-5 + 7 * 4e-6 + 3e-6);
  EXPECT_DOUBLE_EQ(t.work_s(StagePhase::kBackward, 0, 3), 5e-5 + 3 * 6e-6);
  EXPECT_DOUBLE_EQ(t.work_s(StagePhase::kLoss, 0, 4), 7e-6 + 4 * 8e-7);
  EXPECT_DOUBLE_EQ(t.work_s(StagePhase::kStep, 0, 0), 9e-4);
  EXPECT_DOUBLE_EQ(t.receive_s(100), 2e-5 + 100 * 2e-6);
  // 3000 bytes are three TCP segments on the wire, each with 78 bytes besides.
  EXPECT_DOUBLE_EQ(t.send_s(3000), 1e-5 + 3000 * 1e-6 + 8.0 * (3000 + 3 * 78) / 1e8);
  EXPECT_DOUBLE_EQ(t.send_s(1460), 1e-5 + 1460 * 1e-6 + 8.0 * (1460 + 78) / 1e8);
}

TEST(PaceTable, RefusesWhatItCannotReadWithTheLine) {
  const struct {
    const char* text;
    const char* error;
  } cases[] = {
      {"layers 1\nfroward 0 1 1\n", "line 2: unknown directive"},
      {"forward 0 1 1\nlayers 1\n", "line 1: a layer before `layers`"},
      {"layers 2\nforward 2 1 1\n", "line 2: a layer index of the stage"},
      {"layers 1\nforward 0 -1 1\n", "line 2"},
      {"layers 1\nloss 1\n", "line 2: two numbers"},
      {"layers 1\nforward 0 1 1 1 1\n", "line 2: three more numbers"},
      {"layers 1\nsend 1 1 1 1 1\n", "line 2: more words"},
      {"layers 1\nstep 1 2\n", "line 2: more words"},
      {"layers 1\nscale 0\n", "line 2: scale"},
      {"scale 1\n", "no `layers` line"},
  };
  for (const auto& c : cases) {
    PaceTable t;
    char error[120] = {};
    EXPECT_FALSE(parse_pace_table(c.text, &t, error, sizeof error)) << c.text;
    EXPECT_NE(std::strstr(error, c.error), nullptr) << c.text << " -> " << error;
  }
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(Pacer, APieceTakesAtLeastItsScaledModelledTime) {
  PaceTable t;
  t.layers = 1;
  t.scale = 2;
  Pacer pacer(t);
  const auto start = std::chrono::steady_clock::now();
  pacer.spend(0.005);  // 10 ms of host time
  EXPECT_GE(seconds_since(start), 0.010);
  EXPECT_EQ(pacer.totals().pieces, 1u);
  EXPECT_DOUBLE_EQ(pacer.totals().modelled_s, 0.005);
}

TEST(Pacer, BackToBackPiecesAddUpWithoutTheirOvershoot) {
  PaceTable t;
  t.layers = 1;
  Pacer pacer(t);
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) pacer.spend(0.001);
  // Each piece begins where the previous one ended: 20 pieces of 1 ms take at least 20 ms.
  EXPECT_GE(seconds_since(start), 0.020);
  EXPECT_EQ(pacer.totals().pieces, 20u);
}

// A transport that records what was sent and hands back given bytes in given pieces.
class Recorder final : public net::Transport {
 public:
  IoStatus send_all(const void* data, std::size_t len, std::uint32_t) override {
    const auto* p = static_cast<const std::uint8_t*>(data);
    sent.insert(sent.end(), p, p + len);
    ++calls;
    return IoStatus::kOk;
  }
  IoResult recv_some(void* data, std::size_t capacity, std::uint32_t) override {
    if (pos >= incoming.size()) return IoResult{IoStatus::kTimeout, 0};
    std::size_t n = pieces.empty() ? incoming.size() - pos : pieces[piece++ % pieces.size()];
    n = std::min({n, capacity, incoming.size() - pos});
    std::memcpy(data, incoming.data() + pos, n);
    pos += n;
    return IoResult{IoStatus::kOk, n};
  }
  void close() override {}

  std::vector<std::uint8_t> sent;
  int calls = 0;
  std::vector<std::uint8_t> incoming;
  std::vector<std::size_t> pieces;
  std::size_t pos = 0, piece = 0;
};

PaceTable link_table() {
  PaceTable t;
  t.layers = 1;
  t.scale = 1e-6;  // the accounting is what is tested here, not the sleeping
  t.send = PaceLinear{1e-4, 1e-6};
  t.receive = PaceLinear{2e-4, 2e-6};
  return t;
}

// LABELS frames (a 4-byte fixed part, then data) with these data sizes: small ones go in one
// send call, larger ones in three.
const std::uint32_t kPayloads[] = {12, 0, 296, 4092, 253, 4};
const std::uint8_t kFixed[4] = {1, 0, 0, 0};

std::vector<std::uint8_t> frames_of(const std::uint32_t* payloads, std::size_t count) {
  Recorder wire;
  net::FrameSender sender(&wire);
  std::vector<std::uint8_t> data(8192, 0x5A);
  for (std::size_t i = 0; i < count; ++i) {
    EXPECT_EQ(
        sender.send(net::MsgType::kLabels, net::kNoBatch, kFixed, 4, data.data(), payloads[i], 100),
        IoStatus::kOk);
  }
  return wire.sent;
}

double frame_bytes(std::uint32_t data) { return net::kHeaderSize + 4 + data + net::kCrcSize; }

TEST(PacedTransport, ChargesEachSentFrameOnceWhateverTheCallsPerFrame) {
  const PaceTable t = link_table();
  Pacer pacer(t);
  Recorder inner;
  PacedTransport paced;
  paced.wrap(&inner, &pacer);
  net::FrameSender sender(&paced);
  std::vector<std::uint8_t> data(8192, 0x33);
  double modelled = 0;
  for (const std::uint32_t payload : kPayloads) {
    ASSERT_EQ(
        sender.send(net::MsgType::kLabels, net::kNoBatch, kFixed, 4, data.data(), payload, 100),
        IoStatus::kOk);
    modelled += t.send_s(static_cast<std::uint32_t>(frame_bytes(payload)));
  }
  EXPECT_GT(inner.calls, 6);  // the tensors went in three calls each
  EXPECT_EQ(pacer.totals().frames_sent, 6u);
  EXPECT_EQ(pacer.totals().bytes_sent, inner.sent.size());
  EXPECT_NEAR(pacer.totals().modelled_s, modelled, 1e-12);
}

TEST(PacedTransport, ChargesEachReceivedFrameOnceHoweverTheBytesArrive) {
  const PaceTable t = link_table();
  const std::vector<std::uint8_t> stream = frames_of(kPayloads, 6);
  double modelled = 0;
  for (const std::uint32_t payload : kPayloads) {
    modelled += t.receive_s(static_cast<std::uint32_t>(frame_bytes(payload)));
  }
  std::mt19937 rng(7);
  for (int trial = 0; trial < 50; ++trial) {
    SCOPED_TRACE(trial);
    Pacer pacer(t);
    Recorder inner;
    inner.incoming = stream;
    for (int i = 0; i < 5; ++i) inner.pieces.push_back(1 + rng() % (trial < 25 ? 40 : 3000));
    PacedTransport paced;
    paced.wrap(&inner, &pacer);
    std::vector<std::uint8_t> got;
    std::uint8_t buf[5000];
    for (;;) {
      const std::size_t capacity = 1 + rng() % sizeof buf;
      const IoResult r = paced.recv_some(buf, capacity, 0);
      if (r.status != IoStatus::kOk) break;
      got.insert(got.end(), buf, buf + r.bytes);
    }
    EXPECT_EQ(got, stream);
    EXPECT_EQ(pacer.totals().frames_received, 6u);
    EXPECT_NEAR(pacer.totals().modelled_s, modelled, 1e-12);
  }
}

}  // namespace
}  // namespace nmcm::app
