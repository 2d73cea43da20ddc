// Layer 4: a hardware socket as a net::Transport byte stream.
#include <cstdint>

#include "deadline.h"
#include "nmcm/drivers/w5500/w5500.h"
#include "socket.h"
#include "w5500_regs.h"

namespace nmcm::drivers::w5500 {
namespace {

using detail::Deadline;
using detail::Socket;
using net::IoResult;
using net::IoStatus;

// The connection is gone (Sn_SR left ESTABLISHED/CLOSE_WAIT): why, from Sn_IR.
IoStatus lost_status(Socket& s, const char** why) {
  std::uint8_t ir = 0;
  if (!s.interrupts(&ir)) {
    *why = "bus error";
    return IoStatus::kError;
  }
  if ((ir & reg::Sn_IR_TIMEOUT) != 0) {
    // RCR + 1 transmissions went unanswered (§4.1 RCR): the peer is dead or unplugged.
    *why = "retransmission timeout";
    return IoStatus::kError;
  }
  *why = "peer reset";
  return IoStatus::kClosed;
}

// Waits for the SEND_OK of the SEND in flight, if any. The chip runs one SEND at a time (Sn_TX_RD
// only catches up with Sn_TX_WR when it completes), so the next SEND must wait for it.
IoStatus wait_send_ok(Socket& s, bool* pending, const Deadline& deadline, const char** why) {
  while (*pending) {
    std::uint8_t ir = 0, sr = 0;
    if (!s.interrupts(&ir)) {
      *why = "bus error";
      return IoStatus::kError;
    }
    if ((ir & reg::Sn_IR_SENDOK) != 0) {
      if (!s.clear_interrupts(reg::Sn_IR_SENDOK)) {
        *why = "bus error";
        return IoStatus::kError;
      }
      *pending = false;
      break;
    }
    if ((ir & reg::Sn_IR_TIMEOUT) != 0) {
      *why = "retransmission timeout";
      return IoStatus::kError;
    }
    if (!s.status(&sr)) {
      *why = "bus error";
      return IoStatus::kError;
    }
    if (sr == reg::SOCK_CLOSED) return lost_status(s, why);  // no SEND_OK will come
    if (deadline.expired()) {
      *why = "send timeout: the peer is not taking data";
      return IoStatus::kTimeout;
    }
    s.idle();
  }
  return IoStatus::kOk;
}

}  // namespace

Socket W5500Stream::hw() {
  return Socket(chip_.bus_, chip_.clock_, chip_.config_.idle, socket_,
                chip_.config_.command_timeout_ms);
}

bool W5500Stream::usable() const {
  return chip_.initialized() && socket_ < kSocketCount && chip_.tx_size(socket_) != 0 &&
         chip_.rx_size(socket_) != 0;
}

IoStatus W5500Stream::fail(IoStatus status, const char* why) {
  last_error_ = why;
  return status;
}

void W5500Stream::on_connected() {
  state_ = State::kConnected;
  send_pending_ = false;
  broken_ = IoStatus::kOk;
  bytes_sent_ = 0;
  bytes_received_ = 0;
  last_error_ = "";
  Socket s = hw();
  s.clear_interrupts(reg::Sn_IR_CON);  // best effort: CON is informational only
}

IoStatus W5500Stream::connect(const Ip4& ip, std::uint16_t port, std::uint32_t timeout_ms) {
  close();
  if (!usable()) return fail(IoStatus::kError, "socket not usable (init, index or buffer size)");
  const Deadline deadline(chip_.clock_, timeout_ms);
  Socket s = hw();
  IoStatus st = s.open_tcp(chip_.next_local_port());
  if (st == IoStatus::kOk) st = s.start_connect(ip, port);
  if (st != IoStatus::kOk) {
    s.close();
    return fail(st == IoStatus::kTimeout ? IoStatus::kError : st, "socket command failed");
  }
  for (;;) {
    std::uint8_t sr = 0, ir = 0;
    if (!s.status(&sr) || !s.interrupts(&ir)) return fail(IoStatus::kError, "bus error");
    if (sr == reg::SOCK_ESTABLISHED || sr == reg::SOCK_CLOSE_WAIT) {
      on_connected();
      return IoStatus::kOk;
    }
    if ((ir & reg::Sn_IR_TIMEOUT) != 0) {
      // No ARP reply or no SYN/ACK within ARPTO/TCPTO: nobody there.
      s.close();
      return fail(IoStatus::kTimeout, "connect: no answer (ARP/SYN retries ran out)");
    }
    if (sr == reg::SOCK_CLOSED) {
      // Closed without TIMEOUT: the peer answered the SYN with a reset.
      s.close();
      return fail(IoStatus::kRefused, "connect: refused");
    }
    if (deadline.expired()) {
      s.close();
      return fail(IoStatus::kTimeout, "connect: timed out");
    }
    s.idle();
  }
}

IoStatus W5500Stream::connect_retry(const Ip4& ip, std::uint16_t port, std::uint32_t timeout_ms,
                                    std::uint32_t retry_ms) {
  const Deadline deadline(chip_.clock_, timeout_ms);
  for (;;) {
    const IoStatus st = connect(ip, port, deadline.remaining());
    if (st != IoStatus::kRefused) return st;
    if (deadline.remaining() <= retry_ms) return st;
    const Deadline pause(chip_.clock_, retry_ms);
    while (!pause.expired()) {
      if (chip_.config().idle != nullptr) chip_.config().idle();
    }
  }
}

IoStatus W5500Stream::open_listening() {
  Socket s = hw();
  IoStatus st = s.open_tcp(listen_port_);
  if (st == IoStatus::kOk) st = s.listen();
  if (st != IoStatus::kOk) {
    s.close();
    state_ = State::kIdle;
    return fail(st == IoStatus::kTimeout ? IoStatus::kError : st, "listen failed");
  }
  state_ = State::kListening;
  return IoStatus::kOk;
}

IoStatus W5500Stream::listen(std::uint16_t port) {
  close();
  if (!usable()) return fail(IoStatus::kError, "socket not usable (init, index or buffer size)");
  listen_port_ = port;
  return open_listening();
}

IoStatus W5500Stream::accept(std::uint32_t timeout_ms) {
  if (state_ == State::kConnected) return IoStatus::kOk;
  if (state_ != State::kListening) return fail(IoStatus::kClosed, "accept: not listening");
  const Deadline deadline(chip_.clock_, timeout_ms);
  Socket s = hw();
  for (;;) {
    std::uint8_t sr = 0;
    if (!s.status(&sr)) return fail(IoStatus::kError, "bus error");
    // A peer that connected, sent and closed before we looked leaves CLOSE_WAIT: still a
    // connection, with data to read.
    if (sr == reg::SOCK_ESTABLISHED || sr == reg::SOCK_CLOSE_WAIT) {
      on_connected();
      return IoStatus::kOk;
    }
    if (sr == reg::SOCK_CLOSED) {
      // A handshake that failed (reset in SYN_RECV, or timed out) drops the socket out of LISTEN:
      // listen again rather than leave the port deaf.
      const IoStatus st = open_listening();
      if (st != IoStatus::kOk) return st;
    }
    if (deadline.expired()) return fail(IoStatus::kTimeout, "accept: nobody connected");
    s.idle();
  }
}

IoResult W5500Stream::write(const std::uint8_t* data, std::size_t len, std::uint32_t timeout_ms,
                            bool all) {
  if (state_ != State::kConnected) return IoResult{fail(IoStatus::kClosed, "not connected"), 0};
  if (broken_ != IoStatus::kOk) return IoResult{broken_, 0};
  const Deadline deadline(chip_.clock_, timeout_ms);
  Socket s = hw();
  const std::uint16_t size = chip_.tx_size(socket_);
  std::uint16_t wr = 0;
  if (!s.read16(reg::Sn_TX_WR, &wr)) return IoResult{fail(IoStatus::kError, "bus error"), 0};
  std::size_t done = 0;
  while (done < len) {
    std::uint8_t sr = 0;
    if (!s.status(&sr)) return IoResult{fail(IoStatus::kError, "bus error"), done};
    // CLOSE_WAIT: the peer finished sending but may still read (TCP half-close).
    if (sr != reg::SOCK_ESTABLISHED && sr != reg::SOCK_CLOSE_WAIT) {
      broken_ = lost_status(s, &last_error_);
      return IoResult{broken_, done};
    }
    // Never write more than Sn_TX_FSR: beyond it lies data the chip has not sent yet (§4.2).
    std::uint16_t free = 0;
    if (!s.read16_stable(reg::Sn_TX_FSR, &free)) {
      return IoResult{fail(IoStatus::kError, "Sn_TX_FSR unreadable"), done};
    }
    if (free == 0) {
      if (deadline.expired()) {
        return IoResult{fail(IoStatus::kTimeout, "send timeout: TX buffer full"), done};
      }
      s.idle();
      continue;
    }
    const std::size_t chunk = len - done < free ? len - done : free;
    // Copy first, then wait for the previous SEND: the copy over SPI overlaps that transmission.
    if (!s.regs().write_tx(socket_, wr, size, data + done, chunk)) {
      return IoResult{fail(IoStatus::kError, "bus error"), done};
    }
    const IoStatus ok = wait_send_ok(s, &send_pending_, deadline, &last_error_);
    if (ok != IoStatus::kOk) {
      if (ok != IoStatus::kTimeout) broken_ = ok;
      return IoResult{ok, done};
    }
    wr = static_cast<std::uint16_t>(wr + chunk);  // free-running, wraps at 2^16 like the chip's
    if (!s.write16(reg::Sn_TX_WR, wr)) return IoResult{fail(IoStatus::kError, "bus error"), done};
    const IoStatus sent = s.command(reg::Sn_CR_SEND);
    if (sent != IoStatus::kOk) return IoResult{fail(IoStatus::kError, "SEND not taken"), done};
    send_pending_ = true;
    done += chunk;
    bytes_sent_ += chunk;
    if (!all) break;
  }
  return IoResult{IoStatus::kOk, done};
}

IoStatus W5500Stream::send_all(const void* data, std::size_t len, std::uint32_t timeout_ms) {
  return write(static_cast<const std::uint8_t*>(data), len, timeout_ms, true).status;
}

IoResult W5500Stream::send_some(const void* data, std::size_t len, std::uint32_t timeout_ms) {
  return write(static_cast<const std::uint8_t*>(data), len, timeout_ms, false);
}

IoResult W5500Stream::recv_some(void* data, std::size_t capacity, std::uint32_t timeout_ms) {
  if (state_ != State::kConnected) return IoResult{fail(IoStatus::kClosed, "not connected"), 0};
  if (capacity == 0) return IoResult{IoStatus::kOk, 0};
  const Deadline deadline(chip_.clock_, timeout_ms);
  Socket s = hw();
  const std::uint16_t size = chip_.rx_size(socket_);
  for (;;) {
    // Sn_SR before Sn_RX_RSR: if the state already shows the peer's FIN, every byte sent before
    // it is in the buffer by the time RSR is read, so "closed" is never reported over unread data.
    std::uint8_t sr = 0;
    std::uint16_t received = 0;
    if (!s.status(&sr)) return IoResult{fail(IoStatus::kError, "bus error"), 0};
    if (!s.read16_stable(reg::Sn_RX_RSR, &received)) {
      return IoResult{fail(IoStatus::kError, "Sn_RX_RSR unreadable"), 0};
    }
    if (received > 0) {
      const std::size_t n = capacity < received ? capacity : received;
      std::uint16_t rd = 0;
      auto* dst = static_cast<std::uint8_t*>(data);
      if (!s.read16(reg::Sn_RX_RD, &rd) || !s.regs().read_rx(socket_, rd, size, dst, n) ||
          !s.write16(reg::Sn_RX_RD, static_cast<std::uint16_t>(rd + n))) {
        return IoResult{fail(IoStatus::kError, "bus error"), 0};
      }
      // RECV tells the chip the bytes are consumed: it frees them and opens the TCP window.
      if (s.command(reg::Sn_CR_RECV) != IoStatus::kOk) {
        return IoResult{fail(IoStatus::kError, "RECV not taken"), 0};
      }
      bytes_received_ += n;
      return IoResult{IoStatus::kOk, n};
    }
    if (sr == reg::SOCK_CLOSE_WAIT) return IoResult{fail(IoStatus::kClosed, "peer closed"), 0};
    if (sr != reg::SOCK_ESTABLISHED) {
      if (broken_ == IoStatus::kOk) broken_ = lost_status(s, &last_error_);
      return IoResult{broken_, 0};
    }
    if (deadline.expired()) return IoResult{fail(IoStatus::kTimeout, "recv timeout"), 0};
    s.idle();
  }
}

void W5500Stream::close() {
  if (state_ == State::kIdle) return;
  Socket s = hw();
  std::uint8_t sr = 0;
  if (state_ == State::kConnected && s.status(&sr) &&
      (sr == reg::SOCK_ESTABLISHED || sr == reg::SOCK_CLOSE_WAIT)) {
    // Graceful close: let the last SEND finish, send FIN (DISCON), and give the handshake
    // close_timeout_ms before CLOSE drops whatever state is left.
    const Deadline deadline(chip_.clock_, chip_.config().close_timeout_ms);
    const char* why = "";
    if (wait_send_ok(s, &send_pending_, deadline, &why) == IoStatus::kOk &&
        s.command(reg::Sn_CR_DISCON) == IoStatus::kOk) {
      for (;;) {
        std::uint8_t ir = 0;
        if (!s.status(&sr) || !s.interrupts(&ir)) break;
        if (sr == reg::SOCK_CLOSED || (ir & reg::Sn_IR_TIMEOUT) != 0) break;
        if (deadline.expired()) break;
        s.idle();
      }
    }
  }
  s.close();  // CLOSE is valid in every state and leaves SOCK_CLOSED with Sn_IR cleared
  state_ = State::kIdle;
  send_pending_ = false;
  broken_ = IoStatus::kOk;
}

bool W5500Stream::peer(Ip4* ip, std::uint16_t* port) {
  if (state_ != State::kConnected) return false;
  Socket s = hw();
  return s.regs().read(reg::block_socket(socket_), reg::Sn_DIPR, ip->octets, 4) &&
         s.read16(reg::Sn_DPORT, port);
}

}  // namespace nmcm::drivers::w5500
