// The UART link layer (uart_network.h): connections opened, accepted, replaced and reset with the
// link preambles over in-memory UARTs, the frames' bytes passed through untouched whatever they
// hold, and the node-facing NodeNetwork calls.
#include "nmcm/runtime/uart_network.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <vector>

namespace nmcm::runtime {
namespace {

using net::IoStatus;
using Bytes = std::vector<uint8_t>;

// One end of a UART: bytes written go to `out`, bytes read come from `in`.
class FakeUart final : public UartChannel {
 public:
  size_t read_some(uint8_t* data, size_t n) override {
    size_t got = 0;
    while (got < n && !in.empty()) {
      data[got++] = in.front();
      in.pop_front();
    }
    return got;
  }
  size_t write_some(const uint8_t* data, size_t n) override {
    if (stalled) return 0;
    out.insert(out.end(), data, data + n);
    return n;
  }
  void arrive(const Bytes& bytes) { in.insert(in.end(), bytes.begin(), bytes.end()); }
  Bytes sent() {
    Bytes b(out.begin(), out.end());
    out.clear();
    return b;
  }

  std::deque<uint8_t> in;
  std::deque<uint8_t> out;
  bool stalled = false;
};

// Every reading moves time on, so that a wait with a timeout always ends.
class StepClock final : public NodeClock {
 public:
  uint32_t millis() override { return ms++; }
  uint64_t ticks() override { return ms; }
  uint32_t tick_hz() override { return 1000; }
  uint32_t ms = 0;
};

Bytes preamble(LinkSignal kind) {
  Bytes b(kLinkPrefix, kLinkPrefix + sizeof kLinkPrefix);
  b.push_back(static_cast<uint8_t>(kind));
  return b;
}

Bytes operator+(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

Bytes text(const char* s) { return Bytes(s, s + std::strlen(s)); }

// Everything the transport has, until it reports something else than kOk.
Bytes drain(net::Transport* t, IoStatus* end) {
  Bytes got;
  for (;;) {
    uint8_t buf[7];  // odd-sized reads: nothing depends on how the bytes are asked for
    const net::IoResult r = t->recv_some(buf, sizeof buf, 0);
    if (r.status != IoStatus::kOk) {
      *end = r.status;
      return got;
    }
    got.insert(got.end(), buf, buf + r.bytes);
  }
}

struct Listener {
  Listener() : network(inputs, 2, nullptr, clock) {
    EXPECT_EQ(network.listen(Endpoint{}), IoStatus::kOk);
  }
  FakeUart coordinator, upstream;
  UartChannel* inputs[2] = {&coordinator, &upstream};
  StepClock clock;
  UartNetwork network;
};

TEST(UartNetwork, AcceptsAfterOpenAndAnswersAccept) {
  Listener l;
  EXPECT_EQ(l.network.accept(), nullptr);
  l.upstream.arrive(text("stray"));  // before any OPEN: not a connection, and answered RESET
  EXPECT_EQ(l.network.accept(), nullptr);
  EXPECT_EQ(l.upstream.sent(), preamble(LinkSignal::kReset));

  l.coordinator.arrive(preamble(LinkSignal::kOpen) + text("HELLO"));
  net::Transport* t = l.network.accept();
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(l.coordinator.sent(), preamble(LinkSignal::kAccept));
  EXPECT_EQ(l.network.accept(), nullptr);  // one connection per UART
  IoStatus end{};
  EXPECT_EQ(drain(t, &end), text("HELLO"));
  EXPECT_EQ(end, IoStatus::kTimeout);
  EXPECT_EQ(t->send_all("ok", 2, 10), IoStatus::kOk);
  EXPECT_EQ(l.coordinator.sent(), text("ok"));
}

// Frame bytes pass through unchanged, also where they start like a preamble and are not one:
// a prefix cut short, a prefix with an unknown kind byte, prefix bytes twice over.
TEST(UartNetwork, DataThatLooksLikeAPreamblePassesThrough) {
  Listener l;
  l.coordinator.arrive(preamble(LinkSignal::kOpen));
  net::Transport* t = l.network.accept();
  ASSERT_NE(t, nullptr);
  Bytes prefix(kLinkPrefix, kLinkPrefix + sizeof kLinkPrefix);
  const Bytes data = text("a") + Bytes(prefix.begin(), prefix.begin() + 6) + text("b") + prefix +
                     text("Z") + Bytes{0xA5, 0xA5} + prefix + Bytes{0xA5} + text("end");
  l.coordinator.arrive(data);
  IoStatus end{};
  EXPECT_EQ(drain(t, &end), data);
  EXPECT_EQ(end, IoStatus::kTimeout);
}

// A new OPEN while the node holds a connection: the node reads what the old peer sent, then the
// end of the stream; once it lets go, the new connection is there with only its own bytes.
TEST(UartNetwork, OpenReplacesTheConnectionTheNodeHolds) {
  Listener l;
  l.upstream.arrive(preamble(LinkSignal::kOpen) + text("old frame, cut"));
  net::Transport* old = l.network.accept();
  ASSERT_NE(old, nullptr);
  l.upstream.sent();
  uint8_t first[3];
  ASSERT_EQ(old->recv_some(first, sizeof first, 0).bytes, 3u);
  l.upstream.arrive(preamble(LinkSignal::kOpen) + text("new HELLO"));
  IoStatus end{};
  EXPECT_EQ(drain(old, &end), text(" frame, cut"));
  EXPECT_EQ(end, IoStatus::kClosed);
  EXPECT_EQ(old->send_all("x", 1, 10), IoStatus::kClosed);
  EXPECT_EQ(l.network.accept(), nullptr);  // not before the node released the old one
  l.network.release(old);

  net::Transport* fresh = l.network.accept();
  ASSERT_EQ(fresh, old);  // the same UART
  EXPECT_EQ(l.upstream.sent(), preamble(LinkSignal::kAccept));
  EXPECT_EQ(drain(fresh, &end), text("new HELLO"));
  EXPECT_EQ(end, IoStatus::kTimeout);
}

// After the node closed a connection, whatever the peer still sends earns it a RESET, paced so
// that a long stray stream gets a few.
TEST(UartNetwork, BytesForAClosedConnectionAreAnsweredReset) {
  Listener l;
  l.coordinator.arrive(preamble(LinkSignal::kOpen));
  net::Transport* t = l.network.accept();
  ASSERT_NE(t, nullptr);
  l.coordinator.sent();
  l.network.release(t);
  l.coordinator.arrive(text("more of a frame"));
  EXPECT_EQ(l.network.accept(), nullptr);
  EXPECT_EQ(l.coordinator.sent(), preamble(LinkSignal::kReset));
  l.clock.ms += UartLink::kResetIntervalMs;
  l.coordinator.arrive(text("and more"));
  EXPECT_EQ(l.network.accept(), nullptr);
  EXPECT_EQ(l.coordinator.sent(), preamble(LinkSignal::kReset));
}

struct Connector {
  Connector() : network(nullptr, 0, &down, clock) {}
  FakeUart down;
  StepClock clock;
  UartNetwork network;
};

TEST(UartNetwork, ConnectSendsOpenAndSucceedsOnAccept) {
  Connector c;
  net::Transport* t = nullptr;
  // Nobody answers: refused after the timeout, the OPEN sent once.
  EXPECT_EQ(c.network.connect(Endpoint{}, 20, &t), IoStatus::kRefused);
  EXPECT_EQ(t, nullptr);
  EXPECT_EQ(c.down.sent(), preamble(LinkSignal::kOpen));
  // Stale bytes, a RESET of before, then the ACCEPT: the next attempt takes it without a second
  // OPEN, which would only make the listener start over.
  c.down.arrive(text("stale GRADIENTS") + preamble(LinkSignal::kReset) +
                preamble(LinkSignal::kAccept) + text("HELLO_ACK"));
  EXPECT_EQ(c.network.connect(Endpoint{}, 20, &t), IoStatus::kOk);
  ASSERT_NE(t, nullptr);
  EXPECT_TRUE(c.down.sent().empty());
  IoStatus end{};
  EXPECT_EQ(drain(t, &end), text("HELLO_ACK"));
  EXPECT_EQ(end, IoStatus::kTimeout);
  net::Transport* again = nullptr;
  EXPECT_EQ(c.network.connect(Endpoint{}, 20, &again), IoStatus::kError);  // it is held
  EXPECT_EQ(t->send_all("ACTIVATIONS", 11, 10), IoStatus::kOk);
  EXPECT_EQ(c.down.sent(), text("ACTIVATIONS"));
}

// The listener restarted and answered our frames RESET: the connection ends for the node, after
// the bytes that came before it; a reconnect opens anew.
TEST(UartNetwork, ResetEndsTheConnectorsConnection) {
  Connector c;
  net::Transport* t = nullptr;
  ASSERT_EQ(c.network.connect(Endpoint{}, 20, &t), IoStatus::kRefused);
  c.down.arrive(preamble(LinkSignal::kAccept));
  ASSERT_EQ(c.network.connect(Endpoint{}, 20, &t), IoStatus::kOk);
  c.down.sent();
  c.down.arrive(text("GRAD") + preamble(LinkSignal::kReset) + text("junk"));
  IoStatus end{};
  EXPECT_EQ(drain(t, &end), text("GRAD"));
  EXPECT_EQ(end, IoStatus::kClosed);
  c.network.release(t);
  EXPECT_EQ(c.network.connect(Endpoint{}, 5, &t), IoStatus::kRefused);
  EXPECT_EQ(c.down.sent(), preamble(LinkSignal::kOpen));
}

TEST(UartNetwork, SendTimesOutWhenTheUartTakesNothing) {
  Listener l;
  l.coordinator.arrive(preamble(LinkSignal::kOpen));
  net::Transport* t = l.network.accept();
  ASSERT_NE(t, nullptr);
  l.coordinator.stalled = true;
  EXPECT_EQ(t->send_all("frame", 5, 50), IoStatus::kTimeout);
}

TEST(UartNetwork, WaitReturnsForWorkAndOtherwiseAfterItsTimeout) {
  Listener l;
  l.clock.ms = 1000;
  l.network.wait(30);
  EXPECT_GE(l.clock.ms, 1030u);
  l.upstream.arrive(preamble(LinkSignal::kOpen));
  const uint32_t before = l.clock.ms;
  l.network.wait(1000);
  EXPECT_LT(l.clock.ms - before, 10u);  // a connection to accept
  l.network.stop_listening();
  EXPECT_EQ(l.network.accept(), nullptr);
}

// The class behind a hang under QEMU: bytes that end like the start of a preamble (1 to 15 bytes
// of its prefix, as a frame's CRC ending in 0xA5 does once in 256 frames) must be readable at
// once, with nothing after them: the peer sends its next byte only after the node answered.
TEST(UartNetwork, ATrailingPartialPrefixIsReadableAtOnce) {
  const Bytes prefix(kLinkPrefix, kLinkPrefix + sizeof kLinkPrefix);
  for (size_t k = 1; k <= prefix.size(); ++k) {
    Listener l;
    l.coordinator.arrive(preamble(LinkSignal::kOpen));
    net::Transport* t = l.network.accept();
    ASSERT_NE(t, nullptr);
    const Bytes frame = text("frame") + Bytes(prefix.begin(), prefix.begin() + k);
    l.coordinator.arrive(frame);
    IoStatus end{};
    EXPECT_EQ(drain(t, &end), frame) << k << " prefix bytes at the end";
    EXPECT_EQ(end, IoStatus::kTimeout);
    // The rest of the stream goes on as data, whatever follows.
    l.coordinator.arrive(text("Z"));
    EXPECT_EQ(drain(t, &end), text("Z"));
  }
}

// Random byte streams rich in prefix fragments, arriving in random pieces and read in random
// sizes between the pieces: every byte comes out once, in order, and a whole preamble among them
// ends the connection with exactly the bytes before it.
TEST(UartNetwork, StreamsArriveExactlyWhateverTheirPiecesAndReads) {
  const Bytes prefix(kLinkPrefix, kLinkPrefix + sizeof kLinkPrefix);
  uint32_t rng = 12345;
  auto next = [&rng](uint32_t n) {
    rng = rng * 1664525u + 1013904223u;
    return (rng >> 8) % n;
  };
  for (int trial = 0; trial < 300; ++trial) {
    Listener l;
    l.coordinator.arrive(preamble(LinkSignal::kOpen));
    net::Transport* t = l.network.accept();
    ASSERT_NE(t, nullptr);
    Bytes data;
    const uint32_t pieces = 1 + next(20);
    for (uint32_t p = 0; p < pieces; ++p) {
      if (next(2) == 0) {
        const size_t k = 1 + next(static_cast<uint32_t>(prefix.size()));
        data.insert(data.end(), prefix.begin(), prefix.begin() + k);
        if (k == prefix.size() && next(2) == 0) data.push_back('Q');  // an unknown kind byte
      } else {
        for (uint32_t i = next(300); i > 0; --i) data.push_back(static_cast<uint8_t>(next(256)));
      }
    }
    // A complete prefix followed by a kind byte is a preamble: keep the stream free of them.
    for (size_t i = 0; i + prefix.size() < data.size(); ++i) {
      if (std::equal(prefix.begin(), prefix.end(), data.begin() + static_cast<long>(i))) {
        uint8_t& kind = data[i + prefix.size()];
        if (kind == 'O' || kind == 'A' || kind == 'R') kind = 'Q';
      }
    }
    const bool reopen = next(3) == 0;
    Bytes got;
    size_t at = 0;
    IoStatus end = IoStatus::kOk;
    const Bytes tail = reopen ? preamble(LinkSignal::kOpen) + text("next") : Bytes{};
    const Bytes all = data + tail;
    while (at < all.size() || end == IoStatus::kOk) {
      const size_t piece = std::min<size_t>(all.size() - at, 1 + next(40));
      l.coordinator.arrive(
          Bytes(all.begin() + static_cast<long>(at), all.begin() + static_cast<long>(at + piece)));
      at += piece;
      uint8_t buf[64];
      const net::IoResult r = t->recv_some(buf, 1 + next(sizeof buf), 0);
      if (r.status == IoStatus::kOk) {
        got.insert(got.end(), buf, buf + r.bytes);
      } else if (at == all.size()) {
        end = r.status;
      }
    }
    if (reopen) {
      // The old connection gets its data, plus at most the prefix bytes it read before the kind
      // byte came (they belong to a connection that is over).
      ASSERT_GE(got.size(), data.size()) << "trial " << trial;
      const size_t extra = got.size() - data.size();
      ASSERT_LE(extra, prefix.size()) << "trial " << trial;
      EXPECT_EQ(got, data + Bytes(prefix.begin(), prefix.begin() + static_cast<long>(extra)))
          << "trial " << trial;
      EXPECT_EQ(end, IoStatus::kClosed) << "trial " << trial;
      l.network.release(t);
      net::Transport* fresh = l.network.accept();
      ASSERT_NE(fresh, nullptr);
      IoStatus fresh_end{};
      EXPECT_EQ(drain(fresh, &fresh_end), text("next")) << "trial " << trial;
    } else {
      EXPECT_EQ(got, data) << "trial " << trial;
      EXPECT_EQ(end, IoStatus::kTimeout) << "trial " << trial;
    }
  }
}

}  // namespace
}  // namespace nmcm::runtime
