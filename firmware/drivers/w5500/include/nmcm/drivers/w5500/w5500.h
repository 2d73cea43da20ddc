// WIZnet W5500 driver: the chip's hardwired TCP sockets as nmcm::net::Transport byte streams.
//
// Layers (each in its own file under src/, each checking every return value):
//   spi_frame.cpp   one SPI frame: 16-bit address, control byte (block, read/write, VDM), data
//   registers.cpp   8/16-bit registers, counters read until stable, TX/RX rings with wrap
//   socket.cpp      Sn_CR commands and Sn_SR waits, every one with a timeout
//   stream.cpp      W5500Stream: connect/listen/accept, send_all/recv_some/close
//   w5500.cpp       W5500: reset, presence check, network and buffer configuration
//
// The driver never calls the port directly: it gets the SPI bus and a millisecond clock from the
// caller, so the same code runs on a board, on the host against tools/w5500_emulator, and in the
// unit tests. No heap, no exceptions, no RTTI, no standard containers.
//
//   W5500 chip(port::w5500_bus(), port::millis);
//   if (chip.init(config) != Status::kOk) ...           // "no W5500", bus fault, bad config
//   W5500Stream upstream(chip, 0), downstream(chip, 1);
//   upstream.listen(5000);     upstream.accept(10000);   // a peer connects to us
//   downstream.connect_retry({{192, 168, 50, 12}}, 5000, 10000);
//   downstream.send_all(data, n, 1000);  upstream.recv_some(buf, sizeof buf, 1000);
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/net/transport.h"
#include "nmcm/port/port.h"

namespace nmcm::drivers::w5500 {

// Milliseconds, monotonic, wrapping at 2^32 (port::millis on a board; anything in tests).
using Clock = std::uint32_t (*)();
// Called on every turn of a wait loop (nullptr: spin). The host uses it to yield the CPU; a board
// may leave it null or wait for an interrupt.
using IdleHook = void (*)();

constexpr std::uint8_t kSocketCount = 8;

struct Ip4 {
  std::uint8_t octets[4];
};

struct Mac {
  std::uint8_t octets[6];
};

// Outcome of the chip-level calls (init and friends). Stream calls return net::IoStatus.
enum class Status : std::uint8_t {
  kOk = 0,
  kNoDevice,         // after reset, VERSIONR was not 0x04 or RTR not at its reset value 0x07D0
  kBusError,         // SpiBus::transfer failed, or a written register did not read back
  kTimeout,          // the chip did not finish a reset or command in time
  kInvalidArgument,  // buffer sizes not 0/1/2/4/8/16 KB, or more than 16 KB in all
  kNotInitialized,   // init() has not succeeded
};

// "ok", "no-w5500", ...
const char* status_name(Status status);

// The chip's own give-up times (datasheet §4.1, RTR and RCR), in milliseconds:
//   ARPTO = RTR x 0.1 ms x (RCR + 1)
//   TCPTO = sum over the RCR + 1 transmissions of min(RTR x 2^N, RTR_MAX) x 0.1 ms, where RTR_MAX
//           is the largest RTR x 2^M not above 65535 (the datasheet's example: RTR 2000, RCR 8
//           gives 31.8 s; ARPTO 1.8 s).
constexpr std::uint32_t arp_timeout_ms(std::uint16_t rtr, std::uint8_t rcr) {
  return static_cast<std::uint32_t>(rtr) * (rcr + 1u) / 10u;
}
constexpr std::uint32_t tcp_timeout_ms(std::uint16_t rtr, std::uint8_t rcr) {
  std::uint32_t rtr_max = rtr;
  while (rtr_max != 0 && rtr_max * 2u <= 0xFFFFu) rtr_max *= 2u;
  std::uint32_t total = 0;  // in 100 us units
  std::uint32_t step = rtr;
  for (std::uint32_t n = 0; n <= rcr; ++n) {
    total += step < rtr_max ? step : rtr_max;
    if (step < rtr_max) step *= 2u;
  }
  return total / 10u;
}

struct Config {
  Mac mac;
  Ip4 ip;
  Ip4 subnet;
  Ip4 gateway;
  // Retransmission: first retry after retry_time_100us x 100 us, then doubling, retry_count
  // retries. The chip's defaults (200 ms, 8) give up on a dead peer only after 31.8 s; 100 ms and
  // 3 retries notice it in 1.5 s (tcp_timeout_ms(1000, 3)), ample on a switched LAN where the
  // peer's W5500 acknowledges in hardware within a millisecond.
  std::uint16_t retry_time_100us = 1000;
  std::uint8_t retry_count = 3;
  // Per-socket buffer sizes in KB (0, 1, 2, 4, 8 or 16), each direction summing to at most 16.
  // The chip's default is 2 KB for each of the 8 sockets.
  std::uint8_t tx_kb[kSocketCount] = {2, 2, 2, 2, 2, 2, 2, 2};
  std::uint8_t rx_kb[kSocketCount] = {2, 2, 2, 2, 2, 2, 2, 2};
  // Bounds on the driver's own waits. The chip takes a command within microseconds; these only
  // stop a dead or unpowered chip from hanging the node.
  std::uint32_t reset_timeout_ms = 50;    // for VERSIONR to read 0x04 after the reset pulse
  std::uint32_t command_timeout_ms = 10;  // for Sn_CR to clear / Sn_SR to follow a command
  std::uint32_t close_timeout_ms = 1000;  // close(): for the FIN handshake before a hard CLOSE
  IdleHook idle = nullptr;
};

class W5500Stream;
namespace detail {
class Socket;  // src/socket.h
}  // namespace detail

// The chip: reset, presence check, network configuration. Streams borrow it by reference.
class W5500 {
 public:
  W5500(port::SpiBus& bus, Clock clock) : bus_(bus), clock_(clock) {}
  W5500(const W5500&) = delete;
  W5500& operator=(const W5500&) = delete;

  // Reset pulse and software reset, presence check (VERSIONR == 0x04 and RTR == 0x07D0 right
  // after the reset), then MAC, IP, subnet, gateway, RTR/RCR and socket buffer sizes, each
  // verified by reading it back. kNoDevice is what a missing or unpowered chip gives.
  Status init(const Config& config);
  bool initialized() const { return initialized_; }

  // PHYCFGR.LNK: the Ethernet link is up. False on a bus failure.
  bool link_up();
  // Waits up to timeout_ms for the link (auto-negotiation takes seconds after a reset).
  Status wait_link(std::uint32_t timeout_ms);
  // VERSIONR, for logs. False on a bus failure.
  bool read_version(std::uint8_t* version);
  // The network settings as the chip holds them (SHAR, SIPR, SUBR, GAR).
  Status read_network(Mac* mac, Ip4* ip, Ip4* subnet, Ip4* gateway);

  // Buffer sizes in bytes as configured by init() (0 before).
  std::uint16_t tx_size(std::uint8_t socket) const;
  std::uint16_t rx_size(std::uint8_t socket) const;
  const Config& config() const { return config_; }

 private:
  friend class W5500Stream;
  std::uint16_t next_local_port();

  port::SpiBus& bus_;
  Clock clock_;
  Config config_{};
  bool initialized_ = false;
  std::uint16_t tx_size_[kSocketCount] = {};
  std::uint16_t rx_size_[kSocketCount] = {};
  std::uint16_t next_port_ = 0;
};

// One hardware socket as a TCP byte stream. A stream either connects (client) or listens and
// accepts one peer (server: a W5500 socket in LISTEN becomes the connection; listen again on
// another socket, or after close(), for the next peer).
class W5500Stream final : public net::Transport {
 public:
  W5500Stream(W5500& chip, std::uint8_t socket) : chip_(chip), socket_(socket) {}
  W5500Stream(const W5500Stream&) = delete;
  W5500Stream& operator=(const W5500Stream&) = delete;
  // No close() here: a stream may outlive its chip in tests, and boards never destroy one.
  ~W5500Stream() = default;

  // One attempt to connect to ip:port within timeout_ms:
  //   kOk; kRefused if the peer answered with a reset (nobody listens on that port);
  //   kTimeout if nobody answered at all (the chip's ARP or SYN retries ran out: ARPTO/TCPTO)
  //   or timeout_ms passed; kError on a bus fault or an unusable socket.
  net::IoStatus connect(const Ip4& ip, std::uint16_t port, std::uint32_t timeout_ms);
  // Tries connect() again every retry_ms while it is refused, for at most timeout_ms in all: how
  // a node reaches a neighbour that may not be listening yet.
  net::IoStatus connect_retry(const Ip4& ip, std::uint16_t port, std::uint32_t timeout_ms,
                              std::uint32_t retry_ms = 100);

  // Opens the socket in LISTEN on `port` and returns at once.
  net::IoStatus listen(std::uint16_t port);
  // Waits up to timeout_ms for a peer to connect to the listening socket (0: just look).
  net::IoStatus accept(std::uint32_t timeout_ms);

  // Transport. send_all waits for free space in the TX buffer (Sn_TX_FSR) and never writes over
  // unsent data; kTimeout if the peer did not take every byte in time (bytes_sent() says how
  // many went), kClosed if the peer reset or the stream is not connected, kError if the chip
  // gave up retransmitting (dead peer, after tcp_timeout_ms) or on a bus fault.
  net::IoStatus send_all(const void* data, std::size_t len, std::uint32_t timeout_ms) override;
  // Reads what has arrived (up to capacity), waiting up to timeout_ms for the first byte.
  // kClosed once the peer closed and every byte it sent has been read.
  net::IoResult recv_some(void* data, std::size_t capacity, std::uint32_t timeout_ms) override;
  // Graceful: waits for the last SEND, DISCON (FIN), waits up to close_timeout_ms for the
  // handshake, then CLOSE. Safe to call twice; later calls return kClosed.
  void close() override;

  // Like send_all, but returns after the first chunk that fits: as many bytes as the TX buffer
  // has room for (waiting up to timeout_ms for any room).
  net::IoResult send_some(const void* data, std::size_t len, std::uint32_t timeout_ms);

  bool connected() const { return state_ == State::kConnected; }
  bool listening() const { return state_ == State::kListening; }
  std::uint8_t socket() const { return socket_; }
  // The peer's address (Sn_DIPR, Sn_DPORT). False on a bus failure or if not connected.
  bool peer(Ip4* ip, std::uint16_t* port);
  // Byte counts since the last connect/accept.
  std::uint64_t bytes_sent() const { return bytes_sent_; }
  std::uint64_t bytes_received() const { return bytes_received_; }
  // Why the last call failed, for logs ("peer reset", "retransmission timeout", ...).
  const char* last_error() const { return last_error_; }

 private:
  enum class State : std::uint8_t { kIdle, kListening, kConnected };

  detail::Socket hw();  // this stream's hardware socket (layer 3)
  bool usable() const;
  net::IoStatus fail(net::IoStatus status, const char* why);
  net::IoResult write(const std::uint8_t* data, std::size_t len, std::uint32_t timeout_ms,
                      bool all);
  net::IoStatus open_listening();
  void on_connected();

  W5500& chip_;
  std::uint8_t socket_;
  State state_ = State::kIdle;
  bool send_pending_ = false;  // a SEND is in flight: its SEND_OK has not been seen yet
  net::IoStatus broken_ = net::IoStatus::kOk;  // sticky once the connection is lost
  std::uint16_t listen_port_ = 0;
  std::uint64_t bytes_sent_ = 0;
  std::uint64_t bytes_received_ = 0;
  const char* last_error_ = "";
};

}  // namespace nmcm::drivers::w5500
