// The node's NodeNetwork on UARTs, or anything that carries bytes as one does (the `qemu` target:
// the streams of the node's host link, nmcm/port/host_link.h). A UART is one byte stream with a
// fixed peer, never "closed": each UART carries one connection at a time, and three 16-byte link
// preambles stand in for what TCP does with its handshake and resets (docs/protocol.md, "Under
// QEMU"):
//
//   OPEN    connecting side -> listener  a new connection starts here; whatever the listener
//                                        still held of an older one is over
//   ACCEPT  listener -> connecting side  the listener took the connection; frames may follow
//   RESET   listener -> connecting side  bytes arrived for no connection (the listener restarted
//                                        or closed it): the connecting side's connection is over
//
// The frames between them are the protocol's, byte for byte: no escaping. A preamble is found at
// any byte position, inside a frame too, so a peer that vanished mid-frame is replaced cleanly;
// its prefix starts with a byte that occurs nowhere else in it, so matching needs no look-back.
// A frame whose bytes happened to contain a preamble is not a concern: its 120 fixed bits are
// far beyond the 2^-32 of undetected corruption the frame CRC already accepts.
//
// Portable: the UARTs come in as UartChannels (polled, non-blocking); time from the NodeClock.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/net/transport.h"
#include "nmcm/runtime/node.h"

namespace nmcm::runtime {

// A UART as the link layer sees it; the port supplies it. Neither call ever waits.
class UartChannel {
 public:
  // Copies up to n bytes that have arrived. Returns how many.
  virtual size_t read_some(uint8_t* data, size_t n) = 0;
  // Takes up to n bytes for sending. Returns how many it took.
  virtual size_t write_some(const uint8_t* data, size_t n) = 0;

 protected:
  ~UartChannel() = default;
};

constexpr size_t kLinkPreambleSize = 16;
// The first 15 bytes of every preamble; the 16th says which one it is (LinkSignal).
extern const uint8_t kLinkPrefix[kLinkPreambleSize - 1];

enum class LinkSignal : uint8_t { kOpen = 'O', kAccept = 'A', kReset = 'R' };

// One UART: one connection at a time, as a Transport.
class UartLink final : public net::Transport {
 public:
  enum class Side : uint8_t { kListener, kConnector };
  enum class State : uint8_t {
    kIdle,        // no connection
    kPending,     // listener: OPEN arrived, not accepted yet (its bytes are kept)
    kConnecting,  // connector: OPEN sent, waiting for ACCEPT
    kOpen,        // a connection the node holds
    kPeerGone,    // the node still holds it, but the peer reset or reopened it: the bytes it
                  // has not read yet, then kClosed
  };
  // Bytes of one connection buffered between the UART and the node's reads.
  static constexpr size_t kBufferSize = 128;
  // The least time between two RESETs, so that a stream of stray bytes gets a few, not one each.
  static constexpr uint32_t kResetIntervalMs = 100;

  UartLink() = default;
  UartLink(const UartLink&) = delete;
  UartLink& operator=(const UartLink&) = delete;
  void attach(UartChannel* channel, Side side, NodeClock* clock);

  net::IoStatus send_all(const void* data, size_t len, uint32_t timeout_ms) override;
  net::IoResult recv_some(void* data, size_t capacity, uint32_t timeout_ms) override;
  // Closing is up to the network (UartNetwork::release): the link must know it is free again.
  void close() override {}

  // Reads what the UART has (as far as the buffer takes it) through the preamble matcher; a byte
  // is readable as soon as it has arrived.
  // True if a byte moved.
  bool service();
  State state() const { return state_; }
  Side side() const { return side_; }
  bool attached() const { return channel_ != nullptr; }
  bool has_data() const { return count_ > 0; }
  bool held() const { return held_by_node_; }

  // UartNetwork's side of the lifecycle.
  bool take_pending();   // listener: kPending -> kOpen, ACCEPT sent
  void start_connect();  // connector: OPEN sent, kConnecting
  bool claim_open();     // connector: kOpen after ACCEPT -> held by the node
  void release();

 private:
  void feed(uint8_t byte);
  void deliver(uint8_t byte);
  void signal(LinkSignal kind);
  void push(uint8_t byte);
  void clear();
  bool send_preamble(LinkSignal kind);
  void stray_byte();

  UartChannel* channel_ = nullptr;
  NodeClock* clock_ = nullptr;
  Side side_ = Side::kListener;
  State state_ = State::kIdle;
  bool held_by_node_ = false;  // handed out by accept() or connect(), not yet released
  bool reopened_ = false;      // listener: an OPEN came while the node held the old connection
  uint8_t matched_ = 0;        // bytes of kLinkPrefix matched so far (or all 15: the kind next)
  size_t matched_pushed_ = 0;  // of those, how many went into the buffer as data
  uint8_t buffer_[kBufferSize] = {};
  size_t head_ = 0;
  size_t count_ = 0;
  bool reset_sent_ = false;
  uint32_t last_reset_ms_ = 0;
};

class UartNetwork final : public NodeNetwork {
 public:
  static constexpr uint32_t kMaxInbound = 4;

  // `inbound`: the UARTs peers connect to (the coordinator's, the upstream neighbour's, the
  // observers'), in any order; `downstream`: the UART to the downstream neighbour, or null.
  UartNetwork(UartChannel* const* inbound, uint32_t inbound_count, UartChannel* downstream,
              NodeClock& clock);
  UartNetwork(const UartNetwork&) = delete;
  UartNetwork& operator=(const UartNetwork&) = delete;

  // The endpoints name TCP ports on the host side (the relay joins them to the UARTs): the
  // node itself only has its UARTs, so `listen` just starts accepting and `connect` uses the
  // downstream UART whatever the endpoint says.
  net::IoStatus listen(const Endpoint& endpoint) override;
  net::Transport* accept() override;
  net::IoStatus connect(const Endpoint& endpoint, uint32_t timeout_ms,
                        net::Transport** out) override;
  void release(net::Transport* transport) override;
  void stop_listening() override;
  void wait(uint32_t timeout_ms) override;

  // What wait() does between two looks at the UARTs once nothing moved for kSpinMs: by default
  // nothing (it polls). A port that can sleep until a UART has a byte (or shortly after) saves
  // the host's CPU under emulation this way. `idle` must return within a few milliseconds.
  // While bytes flow, wait() does not sleep between them: on a UART, waking up for every byte
  // would cost more than it saves.
  static constexpr uint32_t kSpinMs = 2;
  using Idle = void (*)(void* context);
  void set_idle(Idle idle, void* context) {
    idle_ = idle;
    idle_context_ = context;
  }

 private:
  UartLink* find(net::Transport* transport);
  bool busy();

  UartLink inbound_[kMaxInbound];
  uint32_t inbound_count_ = 0;
  UartLink downstream_;
  NodeClock& clock_;
  bool listening_ = false;
  Idle idle_ = nullptr;
  void* idle_context_ = nullptr;
  uint32_t last_activity_ms_ = 0;
};

}  // namespace nmcm::runtime
