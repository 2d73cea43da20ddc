// The node's network over a WIZnet W5500 (boards, and `sim` nodes run through the register-level
// emulator): runtime::NodeNetwork on the chip's hardware sockets. Portable: no heap, exceptions,
// RTTI or standard containers; the pool is fixed and lives inside the object.
//
//   drivers::w5500::Config chip_config{...};                      // MAC, IP, RTR/RCR, idle hook
//   W5500Network::plan_buffers(has_downstream, &chip_config);      // socket buffer sizes
//   W5500 chip(bus, millis);  chip.init(chip_config);
//   W5500Network network(chip, {has_downstream, millis});
//   Node node(stage, node_config, network, clock);
//
// Sockets (README.md, "Sockets and buffers"):
//   socket 0      the connection to the downstream neighbour (stages but the last)
//   sockets 1..4  LISTEN on the node's port, all four: the coordinator, the upstream neighbour,
//                 an observer and one spare (a port probe, a second coordinator told BUSY).
//                 A released one closes and listens again; with all four taken the chip answers
//                 a fifth peer with a reset.
//   sockets 5..7  unused (no buffer memory)
// Buffers: with a downstream neighbour socket 0 has 8 KB TX + 8 KB RX and the inbound sockets
// 2 KB each; the last stage gives its four inbound sockets 4 KB each. 16 KB each way in all.
//
// One thread: the node's loop. A send that waits for TX space does not read meanwhile (the node
// handles frames whole, and a frame arriving into the arena could overwrite the one being sent),
// so two neighbours that send each other a frame at the same moment (pipelined schedules) rely
// on one of the two frames fitting the buffers between them: pipelined_frame_limit() says how
// large a frame may be; README.md, "One thread and full buffers".
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/drivers/w5500/w5500.h"
#include "nmcm/net/transport.h"
#include "nmcm/runtime/node.h"

namespace nmcm::runtime {

struct W5500NetworkConfig {
  // Every stage but the last: socket 0 connects downstream.
  bool has_downstream = true;
  // Milliseconds for wait()'s timeout (the driver's clock; port::millis on a board).
  drivers::w5500::Clock clock = nullptr;
  // Problems the node cannot see (a socket that would not listen again). May be null.
  LogSink log = nullptr;
  // wait()'s turn between two looks at the sockets, when the node has nothing to do (null: the
  // chip's Config::idle, which the driver calls inside its own waits). A board may sleep until
  // the next interrupt here; the host sleeps longer than in the driver's waits.
  drivers::w5500::IdleHook wait_idle = nullptr;
};

// One hardware socket as the node's transport, with a few bytes of look-ahead: wait() can only
// learn that bytes arrived by reading some (the driver has no "peek"), so it keeps them here and
// recv_some() hands them out first.
class W5500Link final : public net::Transport {
 public:
  static constexpr std::size_t kLookAhead = 32;  // one frame header (28 bytes) and a little

  W5500Link(drivers::w5500::W5500& chip, std::uint8_t socket) : stream_(chip, socket) {}
  W5500Link(const W5500Link&) = delete;
  W5500Link& operator=(const W5500Link&) = delete;
  ~W5500Link() = default;

  net::IoStatus send_all(const void* data, std::size_t len, std::uint32_t timeout_ms) override;
  net::IoResult recv_some(void* data, std::size_t capacity, std::uint32_t timeout_ms) override;
  void close() override;

  // Without waiting: true if bytes are there to read or the stream has ended (recv_some then
  // returns at once). Reads up to kLookAhead bytes into the look-ahead.
  bool readable();

  drivers::w5500::W5500Stream& stream() { return stream_; }
  const drivers::w5500::W5500Stream& stream() const { return stream_; }

 private:
  drivers::w5500::W5500Stream stream_;
  std::uint8_t ahead_[kLookAhead] = {};
  std::uint8_t ahead_begin_ = 0;
  std::uint8_t ahead_end_ = 0;
  // How the stream ended, seen while reading ahead; reported once the look-ahead is empty.
  net::IoStatus end_ = net::IoStatus::kOk;
};

class W5500Network final : public NodeNetwork {
 public:
  static constexpr std::uint8_t kDownstreamSocket = 0;
  static constexpr std::uint8_t kFirstInbound = 1;
  static constexpr std::uint8_t kInbound = 4;
  // Buffer sizes in KB (README.md): the downstream socket, and each inbound socket.
  static constexpr std::uint8_t kDownstreamKb = 8;
  static constexpr std::uint8_t kInboundKb = 2;
  static constexpr std::uint8_t kLastStageInboundKb = 4;

  // Sets chip->tx_kb / rx_kb for the layout above (call before W5500::init()).
  static void plan_buffers(bool has_downstream, drivers::w5500::Config* chip);

  // The largest frame (header, payload and CRC, in bytes) that two neighbours may send each
  // other at the same moment without both waiting forever: it fits the sender's downstream TX
  // buffer and the receiver's inbound RX buffer (or the other way round), so one of the two sends
  // completes and its sender goes back to reading. `receiver_is_last`: the downstream neighbour
  // is the last stage (its inbound buffers are larger). Frames of a sequential schedule (one
  // micro-batch in flight) never cross and have no such limit.
  static constexpr std::uint32_t pipelined_frame_limit(bool receiver_is_last) {
    return (kDownstreamKb + (receiver_is_last ? kLastStageInboundKb : kInboundKb)) * 1024u;
  }

  W5500Network(drivers::w5500::W5500& chip, const W5500NetworkConfig& config);
  W5500Network(const W5500Network&) = delete;
  W5500Network& operator=(const W5500Network&) = delete;

  // Every inbound socket listens on endpoint.port (the address is the chip's own, set by init).
  net::IoStatus listen(const Endpoint& endpoint) override;
  net::Transport* accept() override;
  net::IoStatus connect(const Endpoint& endpoint, std::uint32_t timeout_ms,
                        net::Transport** out) override;
  // Closes the connection (the driver's graceful close, bounded by Config::close_timeout_ms);
  // an inbound socket then listens again.
  void release(net::Transport* transport) override;
  void stop_listening() override;
  // Polls the sockets in use and the listening ones, calling the chip's idle hook in between,
  // until one has bytes, an end or a new peer, or timeout_ms passed.
  void wait(std::uint32_t timeout_ms) override;

  // The hardware socket behind a transport from accept()/connect() (-1 if not ours): for logs.
  int socket_of(const net::Transport* transport) const;

 private:
  static constexpr std::uint8_t kLinks = 1 + kInbound;  // index 0: downstream; 1..: inbound

  int index_of(const net::Transport* transport) const;
  void relisten(std::uint8_t index);
  bool something_happened();
  void log(const char* what, std::uint8_t index, const char* why) const;

  drivers::w5500::W5500& chip_;
  W5500NetworkConfig config_;
  W5500Link links_[kLinks];
  bool handed_[kLinks] = {};  // owned by the node (accept()/connect() until release())
  bool deaf_[kLinks] = {};    // its last LISTEN failed (logged once; accept() tries again)
  bool listening_ = false;
  std::uint16_t port_ = 0;
};

}  // namespace nmcm::runtime
