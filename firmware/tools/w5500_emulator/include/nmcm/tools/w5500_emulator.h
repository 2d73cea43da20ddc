// A register-level WIZnet W5500 for the host. It is an nmcm::port::SpiBus: the real driver talks
// to it frame by frame (address, control byte, data), and it answers from an emulated register
// file and 16 KB TX / 16 KB RX of socket memory. Sn_CR commands on TCP sockets are bridged to real
// host sockets on loopback, so a `sim` node can run its network through the driver, and the
// driver's tests can connect, transfer, fill buffers, close and time out against real peers.
// See README.md for what is emulated and what is not.
//
// Host-only (std, POSIX sockets, one background thread). One thread drives the bus, as on a
// board; the emulator's own thread moves data to and from the host meanwhile, as the chip does
// while the MCU is busy. Every public method is safe against that thread.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "nmcm/port/port.h"

namespace nmcm::tools {

class W5500Emulator final : public port::SpiBus {
 public:
  using Ip4 = std::array<std::uint8_t, 4>;

  // The functions below run with the emulator's lock held: they must not call back into it.
  struct Options {
    // Emulated milliseconds (RTR/RCR timeouts run on it). Default: the host's steady clock.
    std::function<std::uint32_t()> clock;
    // CONNECT to ip:port reaches 127.0.0.1:<returned port>; std::nullopt means no host answers
    // (no ARP reply): the chip then times out after ARPTO. Default: every ip, same port.
    std::function<std::optional<std::uint16_t>(const Ip4& ip, std::uint16_t port)> connect_to;
    // LISTEN on port P binds 127.0.0.1:<returned port>. Default: P.
    std::function<std::uint16_t(std::uint16_t port)> listen_on;
    // SO_SNDBUF of the bridged host sockets (0: the kernel's default, which on loopback holds
    // megabytes). Small values make "peer not reading" fill the emulated TX buffer quickly.
    int host_send_buffer = 0;
    // Value of the TX/RX pointers after OPEN. Anything works on a real chip; a value near 0xFFFF
    // makes the 16-bit pointers wrap within the first few KB.
    std::uint16_t initial_pointer = 0;
    // Reads of Sn_CR that still return the command before it reads 0 (the chip takes a moment).
    unsigned command_latency_reads = 1;
    // Bytes handed to the host per socket per frame, like one TCP segment per acknowledgement:
    // Sn_TX_FSR then grows in steps, as on the wire, not all at once. 0: no limit.
    std::size_t segment_size = 1460;
    // The chip works while nobody talks to it: a background thread moves data every this many
    // milliseconds (besides every frame). 0: only on frames (single-threaded, deterministic).
    unsigned background_pump_ms = 1;
  };

  // What the emulator saw the driver do wrong, and how much moved (per socket).
  struct SocketStats {
    std::uint32_t commands = 0;
    std::uint32_t tx_full_reads = 0;    // Sn_TX_FSR reads that returned 0
    std::uint32_t send_while_busy = 0;  // SEND before the previous SEND completed
    std::uint32_t tx_overwrites = 0;    // bytes written over TX data not yet sent
    std::uint32_t rx_overreads = 0;     // bytes read from RX memory outside [RX_RD, RX_WR)
    std::uint32_t bad_recv = 0;         // RECV with Sn_RX_RD past Sn_RX_WR
    std::uint64_t bytes_to_host = 0;
    std::uint64_t bytes_from_host = 0;
  };

  W5500Emulator();
  explicit W5500Emulator(Options options);
  ~W5500Emulator();
  W5500Emulator(const W5500Emulator&) = delete;
  W5500Emulator& operator=(const W5500Emulator&) = delete;

  // port::SpiBus. Host socket I/O is also polled at the start of every frame (select(true)).
  void select(bool selected) override;
  bool transfer(const std::uint8_t* tx, std::uint8_t* rx, std::size_t n) override;
  void reset(bool asserted) override;

  // Moves data between the emulated sockets and the host now (also done on every frame).
  void pump();

  // --- For tests: looking inside, and faults ---------------------------------------------------
  // A register as the driver would read it, without side effects. block: 0 common, 4n+1 socket n.
  std::uint8_t peek(std::uint8_t block, std::uint16_t address) const;
  std::uint8_t socket_status(int socket) const;
  SocketStats stats(int socket) const;
  // Socket n's TX / RX memory (its slice of the 16 KB), for checking wrap-around directly while
  // the socket is idle.
  std::uint8_t* tx_memory(int socket);
  std::uint8_t* rx_memory(int socket);
  std::uint16_t tx_memory_size(int socket) const;
  std::uint16_t rx_memory_size(int socket) const;
  // Pretends the cable is pulled (false): PHYCFGR.LNK drops, nothing moves to or from the host,
  // SENDs and CONNECTs run into the chip's RTR/RCR timeouts.
  void set_link(bool up);
  // Sn_CR never reads 0 again (a hung chip), to test the driver's command timeouts.
  void stall_commands(bool stalled);
  // Configuration errors seen (bad buffer sizes, over 16 KB in all, a socket without memory).
  std::uint32_t config_errors() const;
  std::uint64_t frames() const;

 private:
  static constexpr int kSockets = 8;
  static constexpr std::size_t kCommonSize = 0x40;
  static constexpr std::size_t kSocketRegSize = 0x30;
  static constexpr std::size_t kMemory = 16 * 1024;

  enum class Timer : std::uint8_t { kNone, kArp, kTcp };

  struct Socket {
    std::array<std::uint8_t, kSocketRegSize> reg{};
    std::uint8_t sr = 0;
    std::uint8_t ir = 0;
    std::uint8_t cr = 0;  // command as read back until the chip "takes" it
    unsigned cr_reads_left = 0;
    int fd = -1;              // bridged host connection
    bool connecting = false;  // non-blocking connect() in progress on fd
    bool refused = false;     // the host refused at once: close on the next pump
    std::optional<std::uint16_t> listen_host_port;
    std::uint16_t tx_rd = 0;   // next byte to hand to the host
    std::uint16_t tx_end = 0;  // Sn_TX_WR latched by the last SEND
    bool send_pending = false;
    bool discon_pending = false;  // DISCON waits for the TX data to go first
    bool fin_sent = false;
    std::uint16_t rx_wr = 0;
    std::uint16_t rx_rd = 0;  // committed by RECV
    Timer timer = Timer::kNone;
    std::uint32_t timer_start = 0;
    SocketStats stats;
  };

  void pump_locked();
  std::uint8_t peek_locked(std::uint8_t block, std::uint16_t address) const;
  void power_on_defaults();
  void soft_reset();
  void data_byte(std::uint8_t in, std::uint8_t* out);
  std::uint8_t read_byte(std::uint8_t block, std::uint16_t address);
  void write_byte(std::uint8_t block, std::uint16_t address, std::uint8_t value);
  void write_common(std::uint16_t address, std::uint8_t value);
  void write_socket(int n, std::uint16_t address, std::uint8_t value);
  void command(int n, std::uint8_t cmd);

  std::uint16_t tx_size(int n) const;
  std::uint16_t rx_size(int n) const;
  std::size_t tx_base(int n) const;
  std::size_t rx_base(int n) const;
  std::uint16_t reg16(const Socket& s, std::uint16_t address) const;
  void set_reg16(Socket& s, std::uint16_t address, std::uint16_t value);
  void sync(int n);
  std::uint32_t now() const;
  std::uint32_t arp_timeout() const;
  std::uint32_t tcp_timeout() const;

  bool open_listener(std::uint16_t host_port);
  void drop_unused_listeners();
  void start_connect(int n);
  void close_host(Socket& s, bool abortive);
  void lose_connection(int n, std::uint8_t ir_bits);
  void pump_socket(int n, short revents);
  void flush_tx(int n);
  void fill_rx(int n);
  void send_fin(int n);
  void accept_on(std::uint16_t host_port, int listener_fd);
  void check_timers();

  Options options_;
  std::array<std::uint8_t, kCommonSize> common_{};
  std::array<Socket, kSockets> sockets_{};
  std::array<std::uint8_t, kMemory> tx_mem_{};
  std::array<std::uint8_t, kMemory> rx_mem_{};
  std::map<std::uint16_t, int> listeners_;  // host port -> listening fd

  // SPI frame decoding.
  enum class Phase : std::uint8_t { kIdle, kAddressHigh, kAddressLow, kControl, kData };
  bool selected_ = false;
  bool in_reset_ = false;
  Phase phase_ = Phase::kIdle;
  std::uint16_t address_ = 0;
  std::uint8_t block_ = 0;
  bool write_ = false;
  int fixed_left_ = -1;  // FDM: data bytes left in the frame; -1 in VDM

  bool link_up_ = true;
  bool stall_commands_ = false;
  std::uint32_t config_errors_ = 0;
  std::uint64_t frames_ = 0;

  mutable std::mutex mutex_;  // guards everything above against pump_thread_
  std::atomic<bool> stop_{false};
  std::thread pump_thread_;
};

}  // namespace nmcm::tools
