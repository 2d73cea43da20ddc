// W5500Stream against the emulator bridged to real loopback sockets: connecting and accepting,
// transfers much larger than the socket buffers in both directions, a full TX buffer, a peer that
// closes or resets, and every timeout (connect, recv, dead peer, hung chip).
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <thread>
#include <vector>

#include "host_peer.h"
#include "nmcm/drivers/w5500/w5500.h"
#include "nmcm/tools/w5500_emulator.h"

namespace nmcm::drivers::w5500 {
namespace {

using net::IoResult;
using net::IoStatus;
using test::clock_ms;
using test::HostListener;
using test::HostSocket;
using test::pattern;
using tools::W5500Emulator;

constexpr Ip4 kLoopback{{127, 0, 0, 1}};
constexpr Ip4 kNobody{{192, 168, 50, 99}};  // the emulator finds no host there (no ARP reply)

W5500Emulator::Options emulator_options(int host_send_buffer = 0) {
  W5500Emulator::Options o;
  o.connect_to = [](const W5500Emulator::Ip4& ip, std::uint16_t port) {
    return ip == W5500Emulator::Ip4{192, 168, 50, 99} ? std::nullopt
                                                      : std::optional<std::uint16_t>(port);
  };
  o.initial_pointer = 0xFF00;  // the 16-bit pointers wrap after the first 256 bytes
  o.host_send_buffer = host_send_buffer;
  return o;
}

Config test_config() {
  Config c;
  c.mac = Mac{{0x02, 0x4E, 0x4D, 0x00, 0x00, 0x01}};
  c.ip = Ip4{{192, 168, 50, 11}};
  c.subnet = Ip4{{255, 255, 255, 0}};
  c.gateway = Ip4{{192, 168, 50, 1}};
  // 10 ms retry time, 2 retries: ARPTO 30 ms, TCPTO 70 ms, so that timeouts are quick to test.
  c.retry_time_100us = 100;
  c.retry_count = 2;
  c.idle = test::yield;
  return c;
}

class StreamTest : public ::testing::Test {
 protected:
  explicit StreamTest(int host_send_buffer = 0)
      : emu_(emulator_options(host_send_buffer)), chip_(emu_, clock_ms) {}
  void SetUp() override { ASSERT_EQ(chip_.init(config_), Status::kOk); }

  // The driver did nothing the chip forbids: no write over unsent data, no read of bytes not yet
  // received, no SEND before the previous one completed, no RECV past what arrived.
  void expect_no_misuse(int socket) {
    const auto& st = emu_.stats(socket);
    EXPECT_EQ(st.tx_overwrites, 0u);
    EXPECT_EQ(st.rx_overreads, 0u);
    EXPECT_EQ(st.send_while_busy, 0u);
    EXPECT_EQ(st.bad_recv, 0u);
  }

  // Connects socket `stream` to a fresh host listener and accepts the host side.
  HostSocket connect(W5500Stream& stream, HostListener& listener) {
    EXPECT_EQ(stream.connect(kLoopback, listener.port(), 2000), IoStatus::kOk);
    return listener.accept(2000);
  }

  Config config_ = test_config();
  W5500Emulator emu_;
  W5500 chip_;
};

// Reads exactly n bytes through the driver, or as many as arrive before `deadline_ms`.
std::vector<std::uint8_t> drain(W5500Stream& s, std::size_t n, std::uint32_t timeout_ms,
                                IoStatus* last) {
  std::vector<std::uint8_t> out;
  std::uint8_t buf[3000];  // not a power of two: reads end at odd places in the ring
  const std::uint32_t start = clock_ms();
  *last = IoStatus::kOk;
  while (out.size() < n && clock_ms() - start < timeout_ms) {
    const IoResult r = s.recv_some(buf, sizeof buf, 100);
    if (r.status == IoStatus::kTimeout) continue;
    *last = r.status;
    if (r.status != IoStatus::kOk) break;
    out.insert(out.end(), buf, buf + r.bytes);
  }
  return out;
}

TEST_F(StreamTest, ClientConnectsToAHostListenerAndTalks) {
  HostListener listener;
  W5500Stream stream(chip_, 0);
  HostSocket peer = connect(stream, listener);
  ASSERT_TRUE(peer.valid());
  EXPECT_TRUE(stream.connected());
  Ip4 ip{};
  std::uint16_t port = 0;
  ASSERT_TRUE(stream.peer(&ip, &port));
  EXPECT_EQ(port, listener.port());

  const std::uint8_t hello[] = "hello";
  ASSERT_EQ(stream.send_all(hello, sizeof hello, 1000), IoStatus::kOk);
  std::uint8_t got[sizeof hello] = {};
  ASSERT_TRUE(peer.recv_exact(got, sizeof got, 2000));
  EXPECT_STREQ(reinterpret_cast<const char*>(got), "hello");

  const std::uint8_t world[] = "world";
  ASSERT_TRUE(peer.send_all(world, sizeof world, 1000));
  IoStatus last;
  const auto back = drain(stream, sizeof world, 2000, &last);
  ASSERT_EQ(back.size(), sizeof world);
  EXPECT_STREQ(reinterpret_cast<const char*>(back.data()), "world");
  expect_no_misuse(0);
}

TEST_F(StreamTest, ServerAcceptsAHostClient) {
  const std::uint16_t port = test::free_port();
  W5500Stream stream(chip_, 3);
  ASSERT_EQ(stream.listen(port), IoStatus::kOk);
  EXPECT_TRUE(stream.listening());
  EXPECT_EQ(stream.accept(0), IoStatus::kTimeout);  // nobody yet
  HostSocket client = HostSocket::connect(port, 2000);
  ASSERT_TRUE(client.valid());
  ASSERT_EQ(stream.accept(2000), IoStatus::kOk);
  Ip4 ip{};
  std::uint16_t peer_port = 0;
  ASSERT_TRUE(stream.peer(&ip, &peer_port));
  EXPECT_EQ(peer_port, client.local_port());
  EXPECT_EQ(ip.octets[0], 127);

  const std::uint8_t ping[] = {1, 2, 3, 4};
  ASSERT_TRUE(client.send_all(ping, sizeof ping, 1000));
  IoStatus last;
  EXPECT_EQ(drain(stream, 4, 2000, &last), std::vector<std::uint8_t>(ping, ping + 4));
}

TEST_F(StreamTest, TwoSocketsListeningOnOnePortAcceptOneClientEach) {
  const std::uint16_t port = test::free_port();
  W5500Stream a(chip_, 0), b(chip_, 1);
  ASSERT_EQ(a.listen(port), IoStatus::kOk);
  ASSERT_EQ(b.listen(port), IoStatus::kOk);
  HostSocket c1 = HostSocket::connect(port, 2000);
  ASSERT_EQ(a.accept(2000), IoStatus::kOk);
  HostSocket c2 = HostSocket::connect(port, 2000);
  ASSERT_EQ(b.accept(2000), IoStatus::kOk);
  const std::uint8_t x = 'x', y = 'y';
  ASSERT_TRUE(c1.send_all(&x, 1, 1000));
  ASSERT_TRUE(c2.send_all(&y, 1, 1000));
  IoStatus last;
  EXPECT_EQ(drain(a, 1, 2000, &last), std::vector<std::uint8_t>{'x'});
  EXPECT_EQ(drain(b, 1, 2000, &last), std::vector<std::uint8_t>{'y'});
}

// A peer whose SYN arrives the moment LISTEN takes effect: the emulator runs only on SPI frames
// (no background thread), and the driver's idle hook dials the port while LISTEN is still being
// acknowledged, so the connection is accepted before the driver first reads Sn_SR. Sampled over
// how long the chip takes to acknowledge a command and over what the peer does at once (waits,
// sends, sends and closes): listen() succeeds and the peer is served, never reset.
struct EarlyPeer {
  std::uint16_t port = 0;
  int behaviour = 0;  // 0: connects and waits, 1: sends, 2: sends and closes its side
  HostSocket client;
};
EarlyPeer* g_early = nullptr;

void dial_during_listen() {
  if (g_early == nullptr || g_early->client.valid()) return;
  // Refused at once (loopback) until LISTEN has taken effect and the port has a listener.
  g_early->client = HostSocket::connect(g_early->port, 100);
  if (!g_early->client.valid() || g_early->behaviour == 0) return;
  const std::uint8_t ping[] = {'p', 'i', 'n', 'g'};
  ASSERT_TRUE(g_early->client.send_all(ping, sizeof ping, 1000));
  if (g_early->behaviour == 2) ::shutdown(g_early->client.fd(), SHUT_WR);
}

TEST(StreamListenRace, APeerConnectingAsListenTakesEffectIsServedNotReset) {
  for (unsigned latency = 1; latency <= 4; ++latency) {
    for (int behaviour = 0; behaviour <= 2; ++behaviour) {
      SCOPED_TRACE(testing::Message() << "latency " << latency << ", behaviour " << behaviour);
      W5500Emulator::Options options = emulator_options();
      options.background_pump_ms = 0;  // the chip moves only when the driver talks to it
      options.command_latency_reads = latency;
      W5500Emulator emu(options);
      W5500 chip(emu, clock_ms);
      Config config = test_config();
      config.idle = dial_during_listen;
      ASSERT_EQ(chip.init(config), Status::kOk);
      EarlyPeer early;
      early.port = test::free_port();
      early.behaviour = behaviour;
      W5500Stream stream(chip, 2);
      g_early = &early;
      const IoStatus listened = stream.listen(early.port);
      g_early = nullptr;
      ASSERT_TRUE(early.client.valid()) << "the peer never got through";
      ASSERT_EQ(listened, IoStatus::kOk);
      ASSERT_EQ(stream.accept(2000), IoStatus::kOk);
      IoStatus last;
      if (behaviour > 0) {
        EXPECT_EQ(drain(stream, 4, 2000, &last), (std::vector<std::uint8_t>{'p', 'i', 'n', 'g'}));
      }
      const std::uint8_t pong[] = {'p', 'o', 'n', 'g'};
      ASSERT_EQ(stream.send_all(pong, sizeof pong, 1000), IoStatus::kOk);
      std::uint8_t got[4] = {};
      ASSERT_TRUE(early.client.recv_exact(got, sizeof got, 2000)) << "the peer was reset";
      EXPECT_EQ(std::vector<std::uint8_t>(got, got + 4), std::vector<std::uint8_t>(pong, pong + 4));
      early.client.close();  // first: the driver's graceful close then has its FIN at once
      stream.close();
    }
  }
}

TEST_F(StreamTest, ListensAgainAfterClosingAConnection) {
  const std::uint16_t port = test::free_port();
  W5500Stream stream(chip_, 0);
  for (int round = 0; round < 2; ++round) {
    ASSERT_EQ(stream.listen(port), IoStatus::kOk) << round;
    HostSocket client = HostSocket::connect(port, 2000);
    ASSERT_TRUE(client.valid()) << round;
    ASSERT_EQ(stream.accept(2000), IoStatus::kOk) << round;
    client.close();
    IoStatus last;
    drain(stream, 1, 2000, &last);
    EXPECT_EQ(last, IoStatus::kClosed) << round;
    stream.close();
  }
}

// 100 KB each way at once through 2 KB socket buffers: every byte arrives, in order, and the
// rings wrap dozens of times (and the 16-bit pointers too, starting at 0xFF00).
TEST_F(StreamTest, ClientMovesMoreThanTheBuffersBothWaysAtOnce) {
  constexpr std::size_t kSize = 100 * 1024 + 13;
  const auto up = pattern(kSize, 1), down = pattern(kSize, 2);
  HostListener listener;
  W5500Stream stream(chip_, 2);
  HostSocket peer = connect(stream, listener);
  ASSERT_TRUE(peer.valid());

  std::vector<std::uint8_t> host_got(kSize);
  bool host_recv_ok = false, host_send_ok = false;
  std::thread host_reader([&] { host_recv_ok = peer.recv_exact(host_got.data(), kSize, 10000); });
  std::thread host_writer([&] { host_send_ok = peer.send_all(down.data(), kSize, 10000); });

  std::vector<std::uint8_t> got;
  std::size_t sent = 0;
  std::uint8_t buf[1500];
  const std::uint32_t start = clock_ms();
  while ((sent < kSize || got.size() < kSize) && clock_ms() - start < 10000) {
    if (sent < kSize) {
      const IoResult w = stream.send_some(up.data() + sent, kSize - sent, 0);
      ASSERT_TRUE(w.status == IoStatus::kOk || w.status == IoStatus::kTimeout)
          << net::io_status_text(w.status);
      sent += w.bytes;
    }
    if (got.size() < kSize) {
      const IoResult r = stream.recv_some(buf, sizeof buf, 0);
      ASSERT_TRUE(r.status == IoStatus::kOk || r.status == IoStatus::kTimeout);
      got.insert(got.end(), buf, buf + r.bytes);
    }
  }
  host_reader.join();
  host_writer.join();
  EXPECT_TRUE(host_recv_ok);
  EXPECT_TRUE(host_send_ok);
  EXPECT_EQ(sent, kSize);
  EXPECT_EQ(stream.bytes_sent(), kSize);
  EXPECT_EQ(stream.bytes_received(), kSize);
  EXPECT_TRUE(got == down) << "driver received corrupted data";
  EXPECT_TRUE(host_got == up) << "host received corrupted data";
  expect_no_misuse(2);
}

// The server side with a bigger buffer: the host sends 100 KB, the driver echoes it back with
// send_all, the host checks every byte.
TEST_F(StreamTest, ServerEchoesMoreThanTheBuffers) {
  Config bigger = test_config();
  const std::uint8_t tx_kb[kSocketCount] = {2, 2, 2, 2, 2, 4, 0, 0};
  const std::uint8_t rx_kb[kSocketCount] = {1, 1, 1, 1, 1, 8, 0, 0};
  for (int i = 0; i < kSocketCount; ++i) {
    bigger.tx_kb[i] = tx_kb[i];
    bigger.rx_kb[i] = rx_kb[i];
  }
  ASSERT_EQ(chip_.init(bigger), Status::kOk);
  ASSERT_EQ(chip_.rx_size(5), 8192);
  constexpr std::size_t kSize = 100 * 1024;
  const auto data = pattern(kSize, 3);
  const std::uint16_t port = test::free_port();
  W5500Stream stream(chip_, 5);
  ASSERT_EQ(stream.listen(port), IoStatus::kOk);
  HostSocket client = HostSocket::connect(port, 2000);
  ASSERT_TRUE(client.valid());
  ASSERT_EQ(stream.accept(2000), IoStatus::kOk);

  std::vector<std::uint8_t> echoed(kSize);
  bool host_ok = false;
  std::thread host([&] {
    std::thread writer([&] { client.send_all(data.data(), kSize, 10000); });
    host_ok = client.recv_exact(echoed.data(), kSize, 10000);
    writer.join();
  });
  std::size_t moved = 0;
  std::uint8_t buf[4096];
  const std::uint32_t start = clock_ms();
  while (moved < kSize && clock_ms() - start < 10000) {
    const IoResult r = stream.recv_some(buf, sizeof buf, 100);
    if (r.status == IoStatus::kTimeout) continue;
    ASSERT_EQ(r.status, IoStatus::kOk);
    ASSERT_EQ(stream.send_all(buf, r.bytes, 5000), IoStatus::kOk);
    moved += r.bytes;
  }
  host.join();
  EXPECT_TRUE(host_ok);
  EXPECT_TRUE(echoed == data) << "echo corrupted";
  expect_no_misuse(5);
}

// Small host socket buffers, so that a peer that stops reading fills the chip's TX buffer.
class TxFullTest : public StreamTest {
 protected:
  TxFullTest() : StreamTest(/*host_send_buffer=*/4096) {}
};

TEST_F(TxFullTest, SendTimesOutWhileThePeerDoesNotReadAndResumesIntact) {
  constexpr std::size_t kSize = 1024 * 1024;
  const auto data = pattern(kSize, 4);
  HostListener listener(0, /*receive_buffer=*/4096);
  W5500Stream stream(chip_, 1);
  HostSocket peer = connect(stream, listener);
  ASSERT_TRUE(peer.valid());

  // The peer reads nothing: the kernel buffers fill, then the chip's 2 KB, then Sn_TX_FSR is 0.
  const std::uint32_t start = clock_ms();
  EXPECT_EQ(stream.send_all(data.data(), kSize, 300), IoStatus::kTimeout);
  const std::uint32_t elapsed = clock_ms() - start;
  EXPECT_GE(elapsed, 300u);
  EXPECT_LT(elapsed, 3000u);
  EXPECT_GT(emu_.stats(1).tx_full_reads, 0u);
  const std::size_t first = stream.bytes_sent();
  EXPECT_GT(first, 0u);
  EXPECT_LT(first, kSize);

  // Once the peer reads again the rest goes through, and nothing was lost or overwritten.
  bool clean = false;
  std::vector<std::uint8_t> received;
  std::thread host([&] { received = peer.recv_to_eof(10000, &clean); });
  EXPECT_EQ(stream.send_all(data.data() + first, kSize - first, 10000), IoStatus::kOk);
  stream.close();
  host.join();
  EXPECT_TRUE(clean);
  EXPECT_EQ(received.size(), kSize);
  EXPECT_TRUE(received == data) << "data corrupted across the full buffer";
  expect_no_misuse(1);
}

TEST_F(StreamTest, RecvReturnsEveryByteThenClosedWhenThePeerCloses) {
  constexpr std::size_t kSize = 50 * 1024 + 1;
  const auto data = pattern(kSize, 5);
  HostListener listener;
  W5500Stream stream(chip_, 0);
  HostSocket peer = connect(stream, listener);
  ASSERT_TRUE(peer.valid());
  std::thread host([&] {
    peer.send_all(data.data(), kSize, 10000);
    peer.close();  // FIN right behind the data, while most of it is still on its way
  });
  IoStatus last;
  const auto got = drain(stream, kSize + 1, 10000, &last);
  host.join();
  EXPECT_EQ(last, IoStatus::kClosed);
  EXPECT_EQ(got.size(), kSize);
  EXPECT_TRUE(got == data);
  // Closed stays closed; the stream can still send its half (TCP half-close) until close().
  std::uint8_t b;
  EXPECT_EQ(stream.recv_some(&b, 1, 10).status, IoStatus::kClosed);
  expect_no_misuse(0);
}

TEST_F(StreamTest, SendReportsClosedWhenThePeerResetsMidTransfer) {
  constexpr std::size_t kSize = 4 * 1024 * 1024;
  const auto data = pattern(kSize, 6);
  HostListener listener;
  W5500Stream stream(chip_, 0);
  HostSocket peer = connect(stream, listener);
  ASSERT_TRUE(peer.valid());
  std::thread host([&] {
    std::vector<std::uint8_t> some(64 * 1024);
    peer.recv_exact(some.data(), some.size(), 5000);
    peer.reset();  // RST with data still in flight
  });
  const std::uint32_t start = clock_ms();
  const IoStatus st = stream.send_all(data.data(), kSize, 10000);
  host.join();
  EXPECT_EQ(st, IoStatus::kClosed) << net::io_status_text(st);
  EXPECT_LT(clock_ms() - start, 5000u);
  EXPECT_STREQ(stream.last_error(), "peer reset");
  EXPECT_EQ(stream.send_all(data.data(), 1, 10), IoStatus::kClosed);
}

TEST_F(StreamTest, CloseSendsFinAfterTheLastByte) {
  const auto data = pattern(10000, 7);
  HostListener listener;
  W5500Stream stream(chip_, 4);
  HostSocket peer = connect(stream, listener);
  ASSERT_TRUE(peer.valid());
  bool clean = false;
  std::vector<std::uint8_t> received;
  std::thread host([&] {
    received = peer.recv_to_eof(5000, &clean);
    peer.close();  // answer our FIN so the handshake completes
  });
  ASSERT_EQ(stream.send_all(data.data(), data.size(), 2000), IoStatus::kOk);
  stream.close();
  host.join();
  EXPECT_TRUE(clean) << "the peer saw a reset, not a FIN";
  EXPECT_TRUE(received == data);
  EXPECT_EQ(emu_.socket_status(4), 0x00);  // SOCK_CLOSED
  stream.close();                          // twice is fine
  EXPECT_EQ(stream.send_all(data.data(), 1, 10), IoStatus::kClosed);
  std::uint8_t b;
  EXPECT_EQ(stream.recv_some(&b, 1, 10).status, IoStatus::kClosed);
}

TEST_F(StreamTest, ConnectTimesOutWhenNobodyAnswers) {
  W5500Stream stream(chip_, 0);
  const std::uint32_t start = clock_ms();
  EXPECT_EQ(stream.connect(kNobody, 5000, 5000), IoStatus::kTimeout);
  const std::uint32_t elapsed = clock_ms() - start;
  // The chip gives up after ARPTO = 10 ms x (2 + 1) = 30 ms, long before the driver's 5 s.
  EXPECT_GE(elapsed, arp_timeout_ms(config_.retry_time_100us, config_.retry_count));
  EXPECT_LT(elapsed, 1000u);
  EXPECT_FALSE(stream.connected());
  EXPECT_EQ(emu_.socket_status(0), 0x00);
}

TEST_F(StreamTest, ConnectGivesUpAtItsOwnTimeoutFirst) {
  Config slow = test_config();
  slow.retry_time_100us = 2000;  // the chip's defaults: ARPTO 1.8 s
  slow.retry_count = 8;
  ASSERT_EQ(chip_.init(slow), Status::kOk);
  W5500Stream stream(chip_, 0);
  const std::uint32_t start = clock_ms();
  EXPECT_EQ(stream.connect(kNobody, 5000, 50), IoStatus::kTimeout);
  const std::uint32_t elapsed = clock_ms() - start;
  EXPECT_GE(elapsed, 50u);
  EXPECT_LT(elapsed, 1000u);
}

TEST_F(StreamTest, ConnectIsRefusedWhenNobodyListens) {
  W5500Stream stream(chip_, 0);
  const std::uint32_t start = clock_ms();
  EXPECT_EQ(stream.connect(kLoopback, test::free_port(), 2000), IoStatus::kRefused);
  EXPECT_LT(clock_ms() - start, 1000u);
}

TEST_F(StreamTest, ConnectRetryReachesAListenerThatComesUpLater) {
  const std::uint16_t port = test::free_port();
  std::optional<HostListener> listener;
  std::thread late([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    listener.emplace(port);
  });
  W5500Stream stream(chip_, 0);
  EXPECT_EQ(stream.connect_retry(kLoopback, port, 3000, 20), IoStatus::kOk);
  late.join();
}

TEST_F(StreamTest, RecvTimesOutWhenNothingArrivesAndStaysUsable) {
  HostListener listener;
  W5500Stream stream(chip_, 0);
  HostSocket peer = connect(stream, listener);
  ASSERT_TRUE(peer.valid());
  std::uint8_t buf[16];
  const std::uint32_t start = clock_ms();
  const IoResult r = stream.recv_some(buf, sizeof buf, 50);
  const std::uint32_t elapsed = clock_ms() - start;
  EXPECT_EQ(r.status, IoStatus::kTimeout);
  EXPECT_EQ(r.bytes, 0u);
  EXPECT_GE(elapsed, 50u);
  EXPECT_LT(elapsed, 1000u);
  EXPECT_EQ(stream.recv_some(buf, sizeof buf, 0).status, IoStatus::kTimeout);  // 0: just look

  const std::uint8_t late = 42;
  ASSERT_TRUE(peer.send_all(&late, 1, 1000));
  const IoResult r2 = stream.recv_some(buf, sizeof buf, 2000);
  EXPECT_EQ(r2.status, IoStatus::kOk);
  EXPECT_EQ(r2.bytes, 1u);
  EXPECT_EQ(buf[0], 42);
}

TEST_F(StreamTest, ADeadPeerIsNoticedAfterTheRetransmissionTimeout) {
  HostListener listener;
  W5500Stream stream(chip_, 0);
  HostSocket peer = connect(stream, listener);
  ASSERT_TRUE(peer.valid());
  emu_.set_link(false);  // cable pulled: nothing is acknowledged any more
  EXPECT_FALSE(chip_.link_up());
  const std::uint8_t data[100] = {};
  // The first SEND is handed to the chip; the next one has to wait for its SEND_OK, which never
  // comes: the chip retransmits RCR times and raises TIMEOUT after TCPTO = 10+20+40 ms.
  ASSERT_EQ(stream.send_all(data, sizeof data, 5000), IoStatus::kOk);
  const std::uint32_t start = clock_ms();
  EXPECT_EQ(stream.send_all(data, sizeof data, 5000), IoStatus::kError);
  const std::uint32_t elapsed = clock_ms() - start;
  EXPECT_LT(elapsed, 1000u);
  EXPECT_GE(elapsed + 5, tcp_timeout_ms(config_.retry_time_100us, config_.retry_count));
  EXPECT_STREQ(stream.last_error(), "retransmission timeout");
  std::uint8_t b;
  EXPECT_EQ(stream.recv_some(&b, 1, 10).status, IoStatus::kError);
}

TEST_F(StreamTest, WithTheDefaultRetrySettingsADeadPeerTakesAboutASecondAndAHalf) {
  Config defaults = test_config();
  const Config reference{};
  defaults.retry_time_100us = reference.retry_time_100us;
  defaults.retry_count = reference.retry_count;
  ASSERT_EQ(chip_.init(defaults), Status::kOk);
  HostListener listener;
  W5500Stream stream(chip_, 0);
  HostSocket peer = connect(stream, listener);
  ASSERT_TRUE(peer.valid());
  emu_.set_link(false);
  const std::uint8_t data[10] = {};
  ASSERT_EQ(stream.send_all(data, sizeof data, 5000), IoStatus::kOk);
  const std::uint32_t start = clock_ms();
  EXPECT_EQ(stream.send_all(data, sizeof data, 10000), IoStatus::kError);
  const std::uint32_t elapsed = clock_ms() - start;
  EXPECT_GE(elapsed + 5, 1500u);  // not the chip's default 31.8 s
  EXPECT_LT(elapsed, 3000u);
}

TEST_F(StreamTest, AHungChipMakesCommandsFailInsteadOfHanging) {
  W5500Stream stream(chip_, 0);
  emu_.stall_commands(true);  // Sn_CR never clears
  const std::uint32_t start = clock_ms();
  EXPECT_EQ(stream.listen(test::free_port()), IoStatus::kError);
  EXPECT_EQ(stream.connect(kLoopback, 9, 1000), IoStatus::kError);
  EXPECT_LT(clock_ms() - start, 1000u);
  emu_.stall_commands(false);
}

}  // namespace
}  // namespace nmcm::drivers::w5500
