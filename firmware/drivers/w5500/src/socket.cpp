#include "socket.h"

namespace nmcm::drivers::w5500::detail {

using net::IoStatus;

IoStatus Socket::command(std::uint8_t cmd) {
  if (!write8(reg::Sn_CR, cmd)) return IoStatus::kError;
  // §4.2 Sn_CR: "After W5500 accepts the command, the Sn_CR register is automatically cleared to
  // 0x00." Until then a second command would be lost, so every command waits here.
  const Deadline deadline(clock_, command_timeout_ms_);
  for (;;) {
    std::uint8_t cr = 0;
    if (!read8(reg::Sn_CR, &cr)) return IoStatus::kError;
    if (cr == 0) return IoStatus::kOk;
    if (deadline.expired()) return IoStatus::kTimeout;
    idle();
  }
}

IoStatus Socket::wait_status(std::uint8_t state) { return wait_status_in(&state, 1); }

IoStatus Socket::wait_status_in(const std::uint8_t* states, std::size_t count) {
  const Deadline deadline(clock_, command_timeout_ms_);
  for (;;) {
    std::uint8_t sr = 0;
    if (!status(&sr)) return IoStatus::kError;
    for (std::size_t i = 0; i < count; ++i) {
      if (sr == states[i]) return IoStatus::kOk;
    }
    if (deadline.expired()) return IoStatus::kTimeout;
    idle();
  }
}

IoStatus Socket::open_tcp(std::uint16_t local_port) {
  // A socket left in any state (a previous connection, a half-open handshake) is closed first:
  // OPEN is only defined from SOCK_CLOSED.
  const IoStatus closed = close();
  if (closed != IoStatus::kOk) return closed;
  // ND: acknowledge every segment at once. Stages exchange request/response-like bursts through
  // small windows (a few KB of socket buffer); a delayed ACK would stall each burst.
  if (!write8(reg::Sn_MR, reg::Sn_MR_TCP | reg::Sn_MR_ND)) return IoStatus::kError;
  if (!write16(reg::Sn_PORT, local_port)) return IoStatus::kError;
  const IoStatus s = command(reg::Sn_CR_OPEN);
  if (s != IoStatus::kOk) return s;
  return wait_status(reg::SOCK_INIT);
}

IoStatus Socket::listen() {
  const IoStatus s = command(reg::Sn_CR_LISTEN);
  if (s != IoStatus::kOk) return s;
  // A peer's SYN can arrive the moment LISTEN takes effect, so by the first read of Sn_SR the
  // socket may be past LISTEN: half-way through the handshake, connected, or even closed by a
  // peer that connected, sent and closed. That is a listening socket somebody connected to, for
  // accept() to take; treating it as a failed LISTEN would CLOSE (reset) that peer's connection.
  static constexpr std::uint8_t kListeningOrLater[] = {reg::SOCK_LISTEN, reg::SOCK_SYNRECV,
                                                       reg::SOCK_ESTABLISHED, reg::SOCK_CLOSE_WAIT};
  return wait_status_in(kListeningOrLater, sizeof kListeningOrLater);
}

IoStatus Socket::start_connect(const Ip4& ip, std::uint16_t port) {
  if (!regs_.write(reg::block_socket(n_), reg::Sn_DIPR, ip.octets, sizeof ip.octets) ||
      !write16(reg::Sn_DPORT, port)) {
    return IoStatus::kError;
  }
  return command(reg::Sn_CR_CONNECT);
}

IoStatus Socket::close() {
  IoStatus s = command(reg::Sn_CR_CLOSE);
  if (s == IoStatus::kOk) s = wait_status(reg::SOCK_CLOSED);
  if (s == IoStatus::kOk && !clear_interrupts(0xFF)) s = IoStatus::kError;
  return s;
}

}  // namespace nmcm::drivers::w5500::detail
