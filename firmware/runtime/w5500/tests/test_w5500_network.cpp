// The node runtime over W5500Network, over the real W5500 driver, over the register-level
// emulator: the same protocol as over POSIX sockets (handshake, training that equals the stage
// called directly, two chips in a pipeline), and the socket pool's life (peers closing, a full
// chip, timeouts) — with the emulator checking that the driver never misuses the chip.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "w5500_node.h"

namespace nmcm::runtime {
namespace {

using net::ErrorCode;
using net::MsgType;
using test::Client;
using test::Received;
using test::W5500TestNode;

constexpr uint32_t kInput = 64;  // the digits CNN: 1 x 8 x 8
constexpr uint16_t kMicro = 4;   // the golden blobs' micro-batch

// Every use of the chip was legal: no write over unsent TX data, no read outside the received
// RX data, no SEND before the last one completed, no RECV past the write pointer, no bad buffer
// configuration.
void expect_no_misuse(W5500TestNode& node) {
  tools::W5500Emulator& emu = node.emulator();
  EXPECT_EQ(emu.config_errors(), 0u);
  for (int s = 0; s < 8; ++s) {
    const tools::W5500Emulator::SocketStats st = emu.stats(s);
    EXPECT_EQ(st.tx_overwrites, 0u) << "socket " << s;
    EXPECT_EQ(st.rx_overreads, 0u) << "socket " << s;
    EXPECT_EQ(st.send_while_busy, 0u) << "socket " << s;
    EXPECT_EQ(st.bad_recv, 0u) << "socket " << s;
  }
}

// A stage loaded from the same blob and driven by hand: what the node must compute.
struct Reference {
  explicit Reference(const std::vector<uint8_t>& b) : blob(b), storage((1 << 20) + 16) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(storage.data());
    uint8_t* arena = storage.data() + ((16 - p % 16) % 16);
    EXPECT_TRUE(stage.load(blob.data(), blob.size(), arena, 1 << 20, nullptr).ok());
  }
  std::vector<uint8_t> blob;
  std::vector<uint8_t> storage;
  Stage stage;
};

void random_batch(std::mt19937& rng, size_t samples, std::vector<float>* x,
                  std::vector<int32_t>* y) {
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int32_t> label(0, 9);
  x->resize(samples * kInput);
  for (float& v : *x) v = normal(rng);
  y->resize(samples);
  for (int32_t& v : *y) v = label(rng);
}

// The reference of one batch of two micro-batches of 4 on a whole-model stage.
std::vector<float> reference_batch(Stage& s, const std::vector<float>& x,
                                   const std::vector<int32_t>& y) {
  s.zero_grad();
  std::vector<float> loss;
  for (uint32_t m = 0; m < 2; ++m) {
    std::memcpy(s.input(0), x.data() + m * kMicro * kInput, kMicro * kInput * 4);
    std::memcpy(s.labels(0), y.data() + m * kMicro, kMicro * 4);
    EXPECT_TRUE(s.forward(0, kMicro).ok());
    LossResult r{};
    EXPECT_TRUE(s.loss_backward_seed(0, kMicro, 8, LossKind::kCrossEntropy, &r).ok());
    EXPECT_TRUE(s.backward(0, kMicro).ok());
    loss.push_back(r.loss_sum);
  }
  EXPECT_TRUE(s.sgd_step(0.05f, 0.9f, 1e-3f).ok());
  return loss;
}

void begin(Client& c, uint32_t id) {
  c.send_message(MsgType::kBatchBegin,
                 net::BatchBegin{8, 2, net::Mode::kTrain, net::LossCode::kCrossEntropy, 1},
                 net::FrameMeta{0, id, 0});
  const Received ack = c.receive();
  ASSERT_EQ(ack.type(), MsgType::kAck) << ack.reason();
}

void step(Client& c, uint32_t id) {
  c.send_message(MsgType::kStep, net::Step{0.05f, 0.9f, 1e-3f}, net::FrameMeta{0, id, 0});
  const Received ack = c.receive();
  EXPECT_EQ(ack.type(), MsgType::kAck) << ack.reason();
}

// One training batch (two micro-batches, both in flight) through a chain whose first stage the
// coordinator `first` feeds and whose last stage `last` gets the labels (the same client for a
// whole-model node). Returns the loss sums of the METRICS.
std::vector<float> run_batch(Client& first, Client& last, uint32_t id, const std::vector<float>& x,
                             const std::vector<int32_t>& y) {
  const bool one = &first == &last;
  begin(first, id);
  if (!one) begin(last, id);
  for (uint16_t m = 0; m < 2; ++m) {
    const net::FrameMeta meta{0, id, m};
    first.send_message(MsgType::kInputs, net::TensorHead{kMicro, kInput}, meta,
                       x.data() + m * kMicro * kInput, kMicro * kInput * 4);
    last.send_message(MsgType::kLabels, net::LabelsHead{kMicro}, meta, y.data() + m * kMicro,
                      kMicro * 4);
  }
  std::vector<float> loss(2, NAN);
  int metrics = 0, acks = 0;
  while (metrics < 2 || acks < 2) {
    Client& from = metrics < 2 ? last : first;
    const Received r = from.receive(5000);
    if (!r.ok()) {
      ADD_FAILURE() << "batch " << id << ": no answer (" << r.reason() << ")";
      return loss;
    }
    if (r.type() == MsgType::kMetrics) {
      net::Metrics got{};
      net::decode(r.fixed.data(), &got);
      loss[r.header.micro_batch] = got.loss_sum;
      ++metrics;
    } else if (r.type() == MsgType::kAck) {
      ++acks;
    } else {
      ADD_FAILURE() << "unexpected " << net::type_name(r.type()) << ": " << r.reason();
      return loss;
    }
  }
  step(first, id);
  if (!one) step(last, id);
  return loss;
}

void expect_same_weights(Client& c, const Stage& node_stage, Stage& reference, uint32_t first) {
  for (uint32_t t = 0; t < node_stage.tensor_count(); ++t) {
    const TensorView want = reference.weights(first + t);
    const std::vector<float> got = test::pull_tensor(c, static_cast<uint16_t>(t), want.count());
    for (uint32_t i = 0; i < want.count(); ++i) {
      ASSERT_EQ(got[i], want.data[i]) << "tensor " << t << "[" << i << "]";
    }
  }
}

TEST(W5500Network, BufferPlanFillsTheChipsSixteenKilobytes) {
  for (bool has_downstream : {true, false}) {
    drivers::w5500::Config chip{};
    W5500Network::plan_buffers(has_downstream, &chip);
    unsigned tx = 0, rx = 0;
    for (int s = 0; s < 8; ++s) {
      tx += chip.tx_kb[s];
      rx += chip.rx_kb[s];
      const bool inbound = s >= W5500Network::kFirstInbound &&
                           s < W5500Network::kFirstInbound + W5500Network::kInbound;
      if (inbound) {
        EXPECT_GT(chip.rx_kb[s], 0) << s;
      }
      if (s > W5500Network::kInbound) {
        EXPECT_EQ(chip.rx_kb[s], 0) << s;
      }
    }
    EXPECT_EQ(tx, 16u);
    EXPECT_EQ(rx, 16u);
    EXPECT_EQ(chip.tx_kb[0] > 0, has_downstream);
  }
  // The digits CNN split after flatten, micro-batches of 16: 16 x 128 floats cross the boundary.
  EXPECT_LE(net::kHeaderSize + 8 + 16 * 128 * 4 + net::kCrcSize,
            W5500Network::pipelined_frame_limit(true));
}

TEST(W5500Network, HandshakeAndStatusThroughTheChip) {
  W5500TestNode node(test::golden("cnn_whole"));
  ASSERT_TRUE(node.started());
  auto c = test::connect_coordinator(node);
  const net::StatusReport s = test::status_of(node);
  EXPECT_EQ(s.state, net::NodeState::kIdle);
  EXPECT_EQ(s.stage_count, 1u);
  EXPECT_EQ(s.frames_rejected, 0u);
  EXPECT_GT(s.bytes_sent, 0u);
  // A HELLO of another model is refused through the chip as over POSIX.
  Client other;
  ASSERT_TRUE(other.connect(node.port()));
  net::Hello h = test::coordinator_hello(node);
  h.model_hash[0] ^= 1;
  EXPECT_EQ(other.handshake(h).error_code(), ErrorCode::kModelMismatch);
  EXPECT_TRUE(other.closed_by_peer());
  other.close();  // the node's close waits for our FIN (Config::close_timeout_ms at most)
  node.pause();
  expect_no_misuse(node);
}

TEST(W5500Network, TrainsExactlyLikeTheStageCalledDirectly) {
  const std::vector<uint8_t> blob = test::golden("cnn_whole");
  W5500TestNode node(blob);
  ASSERT_TRUE(node.started());
  Reference ref(blob);
  auto c = test::connect_coordinator(node);
  std::mt19937 rng(5);
  std::vector<float> x;
  std::vector<int32_t> y;
  for (uint32_t id = 1; id <= 4; ++id) {
    random_batch(rng, 8, &x, &y);
    ASSERT_EQ(run_batch(*c, *c, id, x, y), reference_batch(ref.stage, x, y)) << "batch " << id;
  }
  // The linear layer's weights (1280 floats) leave in WEIGHTS frames larger than the socket's
  // 2 KB TX buffer: the driver waits for room, chunk by chunk.
  expect_same_weights(*c, node.stage(), ref.stage, 0);
  const net::StatusReport s = test::status_of(node);
  EXPECT_EQ(s.steps, 4u);
  EXPECT_EQ(s.frames_rejected, 0u);
  node.pause();
  expect_no_misuse(node);
}

TEST(W5500Network, TwoChipsInAPipelineTrainLikeTheWholeModel) {
  W5500TestNode last(test::golden("cnn_stage1"));
  ASSERT_TRUE(last.started());
  test::W5500NodeOptions options;
  options.downstream_host_port = last.port();
  W5500TestNode first(test::golden("cnn_stage0"), options);
  ASSERT_TRUE(first.started());
  Reference whole(test::golden("cnn_whole"));
  auto c0 = test::connect_coordinator(first);
  auto c1 = test::connect_coordinator(last);
  std::mt19937 rng(9);
  std::vector<float> x;
  std::vector<int32_t> y;
  for (uint32_t id = 1; id <= 4; ++id) {
    random_batch(rng, 8, &x, &y);
    ASSERT_EQ(run_batch(*c0, *c1, id, x, y), reference_batch(whole.stage, x, y)) << "batch " << id;
  }
  expect_same_weights(*c0, first.stage(), whole.stage, 0);
  expect_same_weights(*c1, last.stage(), whole.stage, 2);
  const net::StatusReport s0 = test::status_of(first), s1 = test::status_of(last);
  EXPECT_EQ(s0.steps, 4u);
  EXPECT_EQ(s1.steps, 4u);
  EXPECT_EQ(s0.frames_rejected + s1.frames_rejected, 0u);
  first.pause();
  last.pause();
  expect_no_misuse(first);
  expect_no_misuse(last);
  // Stage 0 reached stage 1 through its socket 0, and the activations went that way.
  EXPECT_GT(first.emulator().stats(W5500Network::kDownstreamSocket).bytes_to_host,
            4u * 2u * kMicro * 128u * 4u);
}

TEST(W5500Network, APeerClosingFreesItsSocketForTheNext) {
  W5500TestNode node(test::golden("cnn_whole"));
  ASSERT_TRUE(node.started());
  // Twice as many coordinators one after the other as the chip has inbound sockets: each
  // release closes its socket and listens again.
  for (int i = 0; i < 2 * W5500Network::kInbound; ++i) {
    auto c = test::connect_coordinator(node);
    if (i % 2 == 1) begin(*c, 10 + i);  // some leave with a batch open
    c->close();
  }
  // The open batch went with its coordinator; the node answers and trains on.
  const net::StatusReport s = test::status_of(node);
  EXPECT_EQ(s.state, net::NodeState::kIdle);
  auto c = test::connect_coordinator(node);
  std::mt19937 rng(1);
  std::vector<float> x;
  std::vector<int32_t> y;
  random_batch(rng, 8, &x, &y);
  const std::vector<float> loss = run_batch(*c, *c, 100, x, y);
  EXPECT_FALSE(std::isnan(loss[0]) || std::isnan(loss[1]));
  node.pause();
  expect_no_misuse(node);
}

TEST(W5500Network, AFullChipTurnsAwayAFifthPeerUntilOneLeaves) {
  W5500TestNode node(test::golden("cnn_whole"));
  ASSERT_TRUE(node.started());
  // An observer and three peers that have not said HELLO yet hold the four inbound sockets.
  std::vector<std::unique_ptr<Client>> peers;
  for (int i = 0; i < W5500Network::kInbound; ++i) {
    peers.push_back(std::make_unique<Client>());
    ASSERT_TRUE(peers.back()->connect(node.port()));
  }
  ASSERT_EQ(peers.front()
                ->handshake(test::observer_hello(node.stage().layout().header.model_hash))
                .type(),
            MsgType::kHelloAck);
  // No socket listens: the chip answers the SYN with a reset (the emulator closes the port).
  Client fifth;
  EXPECT_FALSE(fifth.connect(node.port()));
  peers.back()->close();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  bool answered = false;
  while (!answered && std::chrono::steady_clock::now() < deadline) {
    Client next;
    answered = next.connect(node.port()) &&
               next.handshake(test::coordinator_hello(node)).type() == MsgType::kHelloAck;
    if (!answered) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_TRUE(answered);
  for (auto& peer : peers) peer->close();
  node.pause();
  expect_no_misuse(node);
}

TEST(W5500Network, AStalledFrameAndASilentPeerTimeOut) {
  test::W5500NodeOptions options;
  options.timeouts.frame_ms = 300;
  options.timeouts.hello_ms = 300;
  W5500TestNode node(test::golden("cnn_whole"), options);
  ASSERT_TRUE(node.started());
  // Half a frame, then nothing: TIMEOUT, and the connection is closed.
  auto c = test::connect_coordinator(node);
  ASSERT_EQ(c->send_raw({'N', 'M', 'C', 'P', 1, 0x10}), net::IoStatus::kOk);
  const auto sent = std::chrono::steady_clock::now();
  const Received r = c->receive(3000);
  const auto waited = std::chrono::steady_clock::now() - sent;
  EXPECT_EQ(r.error_code(), ErrorCode::kTimeout) << r.reason();
  EXPECT_GE(waited, std::chrono::milliseconds(290));
  EXPECT_LT(waited, std::chrono::milliseconds(2000));
  EXPECT_TRUE(c->closed_by_peer());
  c->close();
  // A peer that never says HELLO is closed after hello_ms.
  Client silent;
  ASSERT_TRUE(silent.connect(node.port()));
  EXPECT_TRUE(silent.closed_by_peer(3000));
  silent.close();
  // And the sockets were given back.
  EXPECT_EQ(test::status_of(node).frames_rejected, 1u);
  node.pause();
  expect_no_misuse(node);
}

TEST(W5500Network, AStageWhoseNeighbourDiesDropsTheBatchAndReachesTheNextOne) {
  auto last = std::make_unique<W5500TestNode>(test::golden("cnn_stage1"));
  ASSERT_TRUE(last->started());
  const uint16_t port = last->port();
  test::W5500NodeOptions options;
  options.downstream_host_port = port;
  options.timeouts.connect_retry_ms = 50;
  W5500TestNode first(test::golden("cnn_stage0"), options);
  ASSERT_TRUE(first.started());
  std::mt19937 rng(2);
  std::vector<float> x;
  std::vector<int32_t> y;
  random_batch(rng, 8, &x, &y);
  {
    auto c1 = test::connect_coordinator(*last);
    auto c0 = test::connect_coordinator(first);
    run_batch(*c0, *c1, 1, x, y);
    // The neighbour's chip vanishes (its host sockets close) while a batch is open.
    begin(*c0, 2);
    c1.reset();
    last.reset();
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    c0->send_message(MsgType::kInputs, net::TensorHead{kMicro, kInput}, net::FrameMeta{0, 2, 0},
                     x.data(), kMicro * kInput * 4);
    const Received r = c0->receive(3000);
    EXPECT_EQ(r.error_code(), ErrorCode::kUnexpected) << net::type_name(r.type());
    EXPECT_NE(r.reason().find("downstream"), std::string::npos) << r.reason();
  }
  EXPECT_EQ(test::status_of(first).state, net::NodeState::kIdle);
  // A new neighbour on the same address: stage 0 reaches it again and training goes on.
  test::W5500NodeOptions again;
  again.host_port = port;
  W5500TestNode back(test::golden("cnn_stage1"), again);
  ASSERT_TRUE(back.started());
  auto c0 = test::connect_coordinator(first);
  auto c1 = test::connect_coordinator(back);
  const std::vector<float> loss = run_batch(*c0, *c1, 3, x, y);
  EXPECT_FALSE(std::isnan(loss[0]) || std::isnan(loss[1]));
  first.pause();
  back.pause();
  expect_no_misuse(first);
  expect_no_misuse(back);
}

TEST(W5500Network, WaitSleepsUntilAPeerArrivesOrTheTimeout) {
  tools::W5500Emulator::Options emu;
  const uint16_t host_port = test::free_port();
  emu.listen_on = [host_port](uint16_t) { return host_port; };
  tools::W5500Emulator emulator(emu);
  drivers::w5500::Config config{};
  config.idle = test::idle;
  W5500Network::plan_buffers(false, &config);
  drivers::w5500::W5500 chip(emulator, test::clock_ms);
  ASSERT_EQ(chip.init(config), drivers::w5500::Status::kOk);
  W5500Network network(chip, W5500NetworkConfig{false, test::clock_ms, nullptr});
  ASSERT_EQ(network.listen(Endpoint{{0, 0, 0, 0}, 5000}), net::IoStatus::kOk);
  net::Transport* none = nullptr;
  EXPECT_EQ(network.connect(Endpoint{{1, 2, 3, 4}, 1}, 10, &none), net::IoStatus::kError);

  auto t0 = std::chrono::steady_clock::now();
  network.wait(150);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(150));
  EXPECT_EQ(network.accept(), nullptr);

  net::PosixTcp peer;
  ASSERT_EQ(peer.connect("127.0.0.1", host_port, 1000), net::IoStatus::kOk);
  t0 = std::chrono::steady_clock::now();
  network.wait(5000);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1000));
  net::Transport* t = network.accept();
  ASSERT_NE(t, nullptr);
  EXPECT_GE(network.socket_of(t), W5500Network::kFirstInbound);

  // Bytes: wait() sees them, keeps them, and recv_some hands them out in order.
  const uint8_t hello[5] = {'h', 'e', 'l', 'l', 'o'};
  ASSERT_EQ(peer.send_all(hello, sizeof hello, 1000), net::IoStatus::kOk);
  t0 = std::chrono::steady_clock::now();
  network.wait(5000);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(1000));
  uint8_t got[16] = {};
  size_t n = 0;
  for (int i = 0; i < 100 && n < sizeof hello; ++i) {
    const net::IoResult r = t->recv_some(got + n, sizeof got - n, 10);
    if (r.status == net::IoStatus::kOk) n += r.bytes;
  }
  ASSERT_EQ(n, sizeof hello);
  EXPECT_EQ(std::memcmp(got, hello, sizeof hello), 0);

  // The peer's end: wait() returns, and recv_some says closed.
  peer.close();
  network.wait(5000);
  EXPECT_EQ(t->recv_some(got, sizeof got, 0).status, net::IoStatus::kClosed);
  network.release(t);
  network.stop_listening();
  EXPECT_EQ(network.accept(), nullptr);
}

}  // namespace
}  // namespace nmcm::runtime

namespace nmcm::runtime {
namespace {

// Bytes per second through the emulated chip, each way, on the downstream socket (8 KB buffers)
// and an inbound one (2 KB): not a claim about a real chip (the emulator's SPI takes no time and
// the idle hook sleeps 100 us), but the figure the sim runs at. Printed, and recorded as test
// properties.
TEST(W5500Network, ThroughputThroughTheEmulatedChip) {
  const uint16_t host_port = test::free_port();
  net::PosixListener downstream_peer;
  ASSERT_EQ(downstream_peer.listen("127.0.0.1", 0), net::IoStatus::kOk);
  tools::W5500Emulator::Options emu;
  emu.listen_on = [host_port](uint16_t) { return host_port; };
  const uint16_t peer_port = downstream_peer.port();
  emu.connect_to = [peer_port](const tools::W5500Emulator::Ip4&, uint16_t) { return peer_port; };
  tools::W5500Emulator emulator(emu);
  drivers::w5500::Config config{};
  config.idle = test::idle;
  W5500Network::plan_buffers(true, &config);
  drivers::w5500::W5500 chip(emulator, test::clock_ms);
  ASSERT_EQ(chip.init(config), drivers::w5500::Status::kOk);
  W5500Network network(chip, W5500NetworkConfig{true, test::clock_ms, nullptr});
  ASSERT_EQ(network.listen(Endpoint{{0, 0, 0, 0}, 5000}), net::IoStatus::kOk);

  net::Transport* down = nullptr;
  ASSERT_EQ(network.connect(Endpoint{{10, 0, 0, 2}, 5001}, 1000, &down), net::IoStatus::kOk);
  net::PosixTcp down_peer;
  ASSERT_EQ(downstream_peer.accept(&down_peer, 1000), net::IoStatus::kOk);
  net::PosixTcp up_peer;
  ASSERT_EQ(up_peer.connect("127.0.0.1", host_port, 1000), net::IoStatus::kOk);
  net::Transport* up = nullptr;
  for (int i = 0; i < 1000 && up == nullptr; ++i) {
    network.wait(10);
    up = network.accept();
  }
  ASSERT_NE(up, nullptr);

  constexpr size_t kBytes = 1 << 20;
  std::vector<uint8_t> data(kBytes);
  for (size_t i = 0; i < kBytes; ++i) data[i] = static_cast<uint8_t>(i * 131 + 7);
  struct Case {
    const char* name;
    net::Transport* chip_side;
    net::PosixTcp* host_side;
  };
  for (const Case& c : {Case{"downstream", down, &down_peer}, Case{"inbound", up, &up_peer}}) {
    for (bool chip_sends : {true, false}) {
      std::vector<uint8_t> got(kBytes);
      std::atomic<bool> ok{true};
      const auto t0 = std::chrono::steady_clock::now();
      // The host side on a thread; the chip side on this one, as the node's loop would.
      std::thread host([&] {
        if (chip_sends) {
          size_t n = 0;
          while (n < kBytes) {
            const net::IoResult r = c.host_side->recv_some(got.data() + n, kBytes - n, 5000);
            if (r.status != net::IoStatus::kOk) {
              ok = false;
              return;
            }
            n += r.bytes;
          }
        } else {
          ok = c.host_side->send_all(data.data(), kBytes, 20000) == net::IoStatus::kOk && ok;
        }
      });
      if (chip_sends) {
        EXPECT_EQ(c.chip_side->send_all(data.data(), kBytes, 20000), net::IoStatus::kOk);
      } else {
        size_t n = 0;
        while (n < kBytes) {
          const net::IoResult r = c.chip_side->recv_some(got.data() + n, kBytes - n, 5000);
          ASSERT_EQ(r.status, net::IoStatus::kOk);
          n += r.bytes;
        }
      }
      host.join();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      EXPECT_TRUE(ok);
      EXPECT_EQ(got, data) << c.name;
      const double mbit = 8.0 * kBytes / s / 1e6;
      std::printf("  %s socket, chip %s: %.1f Mbit/s\n", c.name, chip_sends ? "sends" : "receives",
                  mbit);
      ::testing::Test::RecordProperty(
          std::string(c.name) + (chip_sends ? "_send_mbit" : "_recv_mbit"),
          std::to_string(static_cast<int>(mbit)));
    }
  }
  network.release(down);
  network.release(up);
  for (int s = 0; s < 8; ++s) {
    EXPECT_EQ(emulator.stats(s).tx_overwrites + emulator.stats(s).rx_overreads, 0u);
  }
}

}  // namespace
}  // namespace nmcm::runtime
