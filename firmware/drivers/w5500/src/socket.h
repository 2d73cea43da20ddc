// Layer 3: one hardware socket's commands and states. Every command is "write Sn_CR, wait until
// the chip has taken it (Sn_CR reads 0 again)", and every wait is bounded: busy-waiting forever
// on Sn_CR is the classic W5500 hang.
#pragma once

#include <cstddef>
#include <cstdint>

#include "deadline.h"
#include "nmcm/drivers/w5500/w5500.h"
#include "nmcm/net/transport.h"
#include "registers.h"
#include "w5500_regs.h"

namespace nmcm::drivers::w5500::detail {

class Socket {
 public:
  Socket(port::SpiBus& bus, Clock clock_fn, IdleHook idle_fn, std::uint8_t n,
         std::uint32_t command_timeout_ms)
      : regs_(bus),
        clock_(clock_fn),
        idle_(idle_fn),
        n_(n),
        command_timeout_ms_(command_timeout_ms) {}

  Registers& regs() { return regs_; }
  Clock clock() const { return clock_; }
  std::uint8_t number() const { return n_; }
  void idle() const {
    if (idle_ != nullptr) idle_();
  }

  // This socket's registers (block_socket(n)).
  bool read8(std::uint16_t address, std::uint8_t* value) {
    return regs_.read8(reg::block_socket(n_), address, value);
  }
  bool write8(std::uint16_t address, std::uint8_t value) {
    return regs_.write8(reg::block_socket(n_), address, value);
  }
  bool read16(std::uint16_t address, std::uint16_t* value) {
    return regs_.read16(reg::block_socket(n_), address, value);
  }
  bool write16(std::uint16_t address, std::uint16_t value) {
    return regs_.write16(reg::block_socket(n_), address, value);
  }
  bool read16_stable(std::uint16_t address, std::uint16_t* value) {
    return regs_.read16_stable(reg::block_socket(n_), address, value);
  }
  bool status(std::uint8_t* sr) { return read8(reg::Sn_SR, sr); }
  bool interrupts(std::uint8_t* ir) { return read8(reg::Sn_IR, ir); }
  // Sn_IR bits are cleared by writing 1 to them.
  bool clear_interrupts(std::uint8_t mask) { return write8(reg::Sn_IR, mask); }

  // Writes Sn_CR and waits (command_timeout_ms) for the chip to clear it.
  // kOk, kTimeout (the chip never took it), kError (bus).
  net::IoStatus command(std::uint8_t cmd);
  // Waits until Sn_SR == state (command_timeout_ms): kOk, kTimeout, kError.
  net::IoStatus wait_status(std::uint8_t state);
  // Waits until Sn_SR is one of `states` (command_timeout_ms): kOk, kTimeout, kError.
  net::IoStatus wait_status_in(const std::uint8_t* states, std::size_t count);

  // CLOSE, then TCP mode (no delayed ACK) on `local_port`, OPEN, and wait for SOCK_INIT.
  net::IoStatus open_tcp(std::uint16_t local_port);
  // From SOCK_INIT: LISTEN and wait for SOCK_LISTEN, or for a state a peer's SYN moves it to
  // (SYNRECV, ESTABLISHED, CLOSE_WAIT): a peer may connect the moment LISTEN takes effect.
  net::IoStatus listen();
  // From SOCK_INIT: set Sn_DIPR/Sn_DPORT and issue CONNECT (returns once the chip took it; the
  // handshake runs on, see Sn_SR).
  net::IoStatus start_connect(const Ip4& ip, std::uint16_t port);
  // CLOSE, wait for SOCK_CLOSED, clear every Sn_IR bit.
  net::IoStatus close();

 private:
  Registers regs_;
  Clock clock_;
  IdleHook idle_;
  std::uint8_t n_;
  std::uint32_t command_timeout_ms_;
};

}  // namespace nmcm::drivers::w5500::detail
