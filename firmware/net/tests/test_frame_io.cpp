// FrameSender and receive_frame(): the sender reproduces the shared vectors byte for byte, sends
// tensors without copying them, and receive_frame() keeps every timeout and close rule, over
// memory and over real loopback TCP (PosixTcp).
#include "nmcm/net/frame_io.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "net_test_util.h"
#include "nmcm/net/payload.h"
#include "nmcm/net/posix_tcp.h"

namespace nmcm::net {
namespace {

using test::MemoryTransport;
using test::read_vector;

TEST(FrameSender, ReproducesTheInputsVector) {
  MemoryTransport t;
  FrameSender s(&t);
  const float rows[6] = {0.5f, -1.25f, 3.0f, 1e-3f, 65504.0f, -0.0f};
  uint8_t fixed[TensorHead::kSize];
  encode(TensorHead{2, 3}, fixed);
  ASSERT_EQ(
      s.send(MsgType::kInputs, FrameMeta{0, 3, 1}, fixed, sizeof fixed, rows, sizeof rows, 1000),
      IoStatus::kOk);
  EXPECT_EQ(t.sent, read_vector("inputs"));
  EXPECT_EQ(s.next_sequence(), 1u);
  EXPECT_EQ(s.frames_sent(), 1u);
  EXPECT_EQ(s.bytes_sent(), t.sent.size());
}

TEST(FrameSender, ReproducesHelloStepAndErrorVectors) {
  Hello h{};
  h.role = Role::kCoordinator;
  h.stage_index = 1;
  h.stage_count = 2;
  h.max_payload = 65536;
  for (uint32_t i = 0; i < kHashSize; ++i) h.model_hash[i] = static_cast<uint8_t>(0x10 + i);
  std::strcpy(h.cluster, "digits-f413-h7a3");
  uint8_t fixed[Hello::kSize];
  encode(h, fixed);
  MemoryTransport t;
  FrameSender s(&t);
  s.send(MsgType::kHello, kNoBatch, fixed, Hello::kSize, nullptr, 0, 1000);
  EXPECT_EQ(t.sent, read_vector("hello"));

  MemoryTransport t2;
  FrameSender s2(&t2);
  encode(Step{0.05f, 0.9f, 1e-4f}, fixed);
  s2.send(MsgType::kStep, FrameMeta{0, 3, 0}, fixed, Step::kSize, nullptr, 0, 1000);
  EXPECT_EQ(t2.sent, read_vector("step"));

  MemoryTransport t3;
  FrameSender s3(&t3);
  s3.send_error(ErrorCode::kTooLarge, 9000, "payload of 9000 bytes", kNoBatch, 1000);
  EXPECT_EQ(t3.sent, read_vector("error"));
}

TEST(FrameSender, SendsSmallFramesInOneCallAndTensorsWithoutACopy) {
  MemoryTransport t;
  FrameSender s(&t);
  s.send(MsgType::kShutdown, kNoBatch, nullptr, 0, nullptr, 0, 1000);
  EXPECT_EQ(t.send_calls, 1);

  // The at_limit vector: 8 + 128 floats, above the coalescing size: header+fixed, data, CRC.
  MemoryTransport big;
  FrameSender s2(&big);
  float data[128];
  for (int i = 0; i < 64; ++i) {
    data[i] = static_cast<float>(i);
    data[64 + i] = static_cast<float>(-i);
  }
  uint8_t fixed[TensorHead::kSize];
  encode(TensorHead{2, 64}, fixed);
  s2.send(MsgType::kActivations, kNoBatch, fixed, sizeof fixed, data, sizeof data, 1000);
  EXPECT_EQ(big.send_calls, 3);
  EXPECT_EQ(big.sent, read_vector("at_limit"));
}

TEST(FrameSender, CutsErrorReasonsOnACharacterBoundary) {
  std::string reason(199, 'x');
  reason += "\xc3\xa9";  // a 2-byte character straddling byte 200
  MemoryTransport t;
  FrameSender s(&t);
  s.send_error(ErrorCode::kInternal, 0, reason.c_str(), kNoBatch, 1000);
  EXPECT_EQ(t.sent.size(), kHeaderSize + ErrorHead::kSize + 199 + kCrcSize);
}

TEST(FrameSender, RefusesAFixedPartLongerThanAnyType) {
  MemoryTransport t;
  FrameSender s(&t);
  uint8_t fixed[kMaxFixedSize + 1] = {};
  EXPECT_EQ(s.send(MsgType::kHello, kNoBatch, fixed, sizeof fixed, nullptr, 0, 1000),
            IoStatus::kError);
  EXPECT_TRUE(t.sent.empty());
  EXPECT_EQ(s.next_sequence(), 0u);
}

class RefuseAll final : public PayloadRouter {
 public:
  Route route(const FrameDecoder& d) override {
    seen = d.data_size();
    return Route::refused(ErrorCode::kUnexpected, 17);
  }
  uint32_t seen = 0;
};

TEST(ReceiveFrame, PassesTheRoutersRefusal) {
  MemoryTransport t;
  t.incoming = read_vector("inputs");
  FrameDecoder d(4096);
  RefuseAll router;
  const ReceiveResult r = receive_frame(&t, &d, &router, 100, 100);
  EXPECT_EQ(r.io, IoStatus::kOk);
  EXPECT_EQ(r.error, ErrorCode::kUnexpected);
  EXPECT_EQ(r.detail, 17u);
  EXPECT_EQ(router.seen, 24u);
  EXPECT_EQ(t.pos, kHeaderSize + TensorHead::kSize);  // no data byte was read
}

TEST(ReceiveFrame, WithoutARouterRefusesDataParts) {
  MemoryTransport t;
  t.incoming = read_vector("labels");
  FrameDecoder d(4096);
  EXPECT_EQ(receive_frame(&t, &d, nullptr, 100, 100).error, ErrorCode::kUnexpected);
}

TEST(ReceiveFrame, TellsAQuietStreamFromAStalledFrame) {
  MemoryTransport t;
  t.stall_at_end = true;
  FrameDecoder d(4096);
  uint64_t bytes = 0;
  ReceiveResult r = receive_frame(&t, &d, nullptr, 0, 0, &bytes);
  EXPECT_EQ(r.io, IoStatus::kTimeout);
  EXPECT_EQ(r.error, ErrorCode::kNone);  // nothing came: poll again later
  const std::vector<uint8_t> frame = read_vector("shutdown");
  t.incoming.assign(frame.begin(), frame.begin() + 10);
  r = receive_frame(&t, &d, nullptr, 0, 0, &bytes);
  EXPECT_EQ(r.io, IoStatus::kTimeout);
  EXPECT_EQ(r.error, ErrorCode::kTimeout);  // stalled inside a frame: an error
  EXPECT_EQ(bytes, 10u);
}

TEST(ReceiveFrame, TellsACleanCloseFromATruncatedFrame) {
  MemoryTransport t;
  t.incoming = read_vector("shutdown");
  FrameDecoder d(4096);
  EXPECT_TRUE(receive_frame(&t, &d, nullptr, 0, 0).ok());
  ReceiveResult r = receive_frame(&t, &d, nullptr, 0, 0);
  EXPECT_EQ(r.io, IoStatus::kClosed);
  EXPECT_EQ(r.error, ErrorCode::kNone);

  MemoryTransport cut;
  cut.incoming = read_vector("truncated_data");
  FrameDecoder d2(4096);
  class Store final : public PayloadRouter {
   public:
    Route route(const FrameDecoder&) override { return Route::to(buf, sizeof buf); }
    uint8_t buf[64];
  } store;
  r = receive_frame(&cut, &d2, &store, 0, 0);
  EXPECT_EQ(r.io, IoStatus::kClosed);
  EXPECT_EQ(r.error, ErrorCode::kTruncated);
}

// --- real sockets ---------------------------------------------------------------------------

class CopyRouter final : public PayloadRouter {
 public:
  Route route(const FrameDecoder& d) override {
    data.assign(d.data_size(), 0);
    return Route::to(data.data(), data.size());
  }
  std::vector<uint8_t> data;
};

TEST(PosixTcp, CarriesFramesBothWaysOnOneConnection) {
  PosixListener listener;
  ASSERT_EQ(listener.listen("127.0.0.1", 0), IoStatus::kOk);
  ASSERT_NE(listener.port(), 0);
  PosixTcp upstream, downstream;
  ASSERT_EQ(upstream.connect("127.0.0.1", listener.port(), 2000), IoStatus::kOk);
  ASSERT_EQ(listener.accept(&downstream, 2000), IoStatus::kOk);

  // Activations downstream: 64 samples x 100 floats, well above one TCP segment.
  std::vector<float> act(64 * 100);
  for (size_t i = 0; i < act.size(); ++i) act[i] = static_cast<float>(i) * 0.5f;
  uint8_t fixed[TensorHead::kSize];
  encode(TensorHead{64, 100}, fixed);
  FrameSender up_tx(&upstream);
  std::thread sender([&] {
    EXPECT_EQ(up_tx.send(MsgType::kActivations, FrameMeta{0, 5, 2}, fixed, sizeof fixed, act.data(),
                         static_cast<uint32_t>(act.size() * 4), 2000),
              IoStatus::kOk);
  });
  FrameDecoder down_rx(payload_limit(64, 100, 10, false));
  CopyRouter router;
  const ReceiveResult r = receive_frame(&downstream, &down_rx, &router, 2000, 2000);
  sender.join();
  ASSERT_TRUE(r.ok()) << io_status_name(r.io) << " " << error_name(r.error);
  EXPECT_EQ(down_rx.header().type, MsgType::kActivations);
  EXPECT_EQ(down_rx.header().batch, 5u);
  EXPECT_EQ(down_rx.header().micro_batch, 2u);
  ASSERT_EQ(router.data.size(), act.size() * 4);
  EXPECT_EQ(0, std::memcmp(router.data.data(), act.data(), router.data.size()));

  // Gradients upstream on the same connection, numbered from 0 in that direction.
  const float grad[3] = {-1.0f, 0.5f, 2.0f};
  encode(TensorHead{1, 3}, fixed);
  FrameSender down_tx(&downstream);
  ASSERT_EQ(down_tx.send(MsgType::kGradients, FrameMeta{0, 5, 2}, fixed, sizeof fixed, grad,
                         sizeof grad, 2000),
            IoStatus::kOk);
  FrameDecoder up_rx(4096);
  ASSERT_TRUE(receive_frame(&upstream, &up_rx, &router, 2000, 2000).ok());
  EXPECT_EQ(up_rx.header().sequence, 0u);
  EXPECT_EQ(0, std::memcmp(router.data.data(), grad, sizeof grad));
}

TEST(PosixTcp, EveryWaitEndsWithinItsTimeout) {
  PosixListener listener;
  ASSERT_EQ(listener.listen("127.0.0.1", 0), IoStatus::kOk);
  PosixTcp client, server;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(listener.accept(&server, 50), IoStatus::kTimeout);
  ASSERT_EQ(client.connect("127.0.0.1", listener.port(), 1000), IoStatus::kOk);
  ASSERT_EQ(listener.accept(&server, 1000), IoStatus::kOk);
  uint8_t buf[8];
  EXPECT_EQ(server.recv_some(buf, sizeof buf, 50).status, IoStatus::kTimeout);

  // A frame that stops after 10 bytes: receive_frame gives up after the inner timeout.
  const std::vector<uint8_t> frame = read_vector("shutdown");
  ASSERT_EQ(client.send_all(frame.data(), 10, 1000), IoStatus::kOk);
  FrameDecoder d(4096);
  const ReceiveResult r = receive_frame(&server, &d, nullptr, 1000, 50);
  EXPECT_EQ(r.error, ErrorCode::kTimeout);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_LT(elapsed, std::chrono::seconds(2));
}

TEST(PosixTcp, SendTimesOutWhenThePeerDoesNotRead) {
  PosixListener listener;
  ASSERT_EQ(listener.listen("127.0.0.1", 0), IoStatus::kOk);
  PosixTcp client, server;
  ASSERT_EQ(client.connect("127.0.0.1", listener.port(), 1000), IoStatus::kOk);
  ASSERT_EQ(listener.accept(&server, 1000), IoStatus::kOk);
  std::vector<uint8_t> big(64u << 20);  // more than both socket buffers can take
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(client.send_all(big.data(), big.size(), 100), IoStatus::kTimeout);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

TEST(PosixTcp, ReportsCloseAndRefusal) {
  PosixListener listener;
  ASSERT_EQ(listener.listen("127.0.0.1", 0), IoStatus::kOk);
  const uint16_t port = listener.port();
  PosixTcp client, server;
  ASSERT_EQ(client.connect("127.0.0.1", port, 1000), IoStatus::kOk);
  ASSERT_EQ(listener.accept(&server, 1000), IoStatus::kOk);
  client.close();
  uint8_t buf[4];
  EXPECT_EQ(server.recv_some(buf, sizeof buf, 1000).status, IoStatus::kClosed);
  EXPECT_EQ(client.send_all(buf, sizeof buf, 100), IoStatus::kClosed);
  listener.close();
  EXPECT_EQ(client.connect("127.0.0.1", port, 1000), IoStatus::kRefused);
}

TEST(PosixTcp, ConnectRetryWaitsForALateListener) {
  PosixListener probe;
  ASSERT_EQ(probe.listen("127.0.0.1", 0), IoStatus::kOk);
  const uint16_t port = probe.port();
  probe.close();  // a port nobody listens on, for now

  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    PosixListener listener;
    ASSERT_EQ(listener.listen("127.0.0.1", port), IoStatus::kOk);
    PosixTcp server;
    EXPECT_EQ(listener.accept(&server, 2000), IoStatus::kOk);
  });
  PosixTcp client;
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(client.connect_retry("127.0.0.1", port, 3000, 20), IoStatus::kOk);
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(150));
  late.join();

  PosixTcp nobody;
  EXPECT_EQ(nobody.connect_retry("127.0.0.1", port, 150, 20), IoStatus::kRefused);
}

}  // namespace
}  // namespace nmcm::net
