// The chip: reset, presence check, network and buffer configuration.
#include "nmcm/drivers/w5500/w5500.h"

#include "deadline.h"
#include "registers.h"
#include "w5500_regs.h"

namespace nmcm::drivers::w5500 {
namespace {

using detail::Deadline;
using detail::Registers;

bool valid_buffer_kb(std::uint8_t kb) {
  return kb == 0 || kb == 1 || kb == 2 || kb == 4 || kb == 8 || kb == 16;
}

// Busy-waits for at least `ms` milliseconds: the driver has no sleep, only the caller's clock.
void wait_ms(Clock clock, IdleHook idle, std::uint32_t ms) {
  const Deadline deadline(clock, ms);
  while (!deadline.expired()) {
    if (idle != nullptr) idle();
  }
}

// Writes `n` bytes of a common register and reads them back: a cut MOSI line, a chip held in
// reset or a wrong chip-select pin would otherwise go unnoticed until the first connect.
Status write_verified(Registers& regs, std::uint16_t address, const std::uint8_t* src,
                      std::size_t n) {
  std::uint8_t back[8] = {};
  if (n > sizeof back) return Status::kInvalidArgument;
  if (!regs.write(reg::kBlockCommon, address, src, n) ||
      !regs.read(reg::kBlockCommon, address, back, n)) {
    return Status::kBusError;
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (back[i] != src[i]) return Status::kBusError;
  }
  return Status::kOk;
}

}  // namespace

const char* status_name(Status status) {
  switch (status) {
    case Status::kOk:
      return "ok";
    case Status::kNoDevice:
      return "no-w5500";
    case Status::kBusError:
      return "bus-error";
    case Status::kTimeout:
      return "timeout";
    case Status::kInvalidArgument:
      return "invalid-argument";
    case Status::kNotInitialized:
      return "not-initialized";
  }
  return "unknown";
}

Status W5500::init(const Config& config) {
  initialized_ = false;
  unsigned tx_total = 0, rx_total = 0;
  for (std::uint8_t n = 0; n < kSocketCount; ++n) {
    if (!valid_buffer_kb(config.tx_kb[n]) || !valid_buffer_kb(config.rx_kb[n])) {
      return Status::kInvalidArgument;
    }
    tx_total += config.tx_kb[n];
    rx_total += config.rx_kb[n];
  }
  // §4.2 Sn_TXBUF_SIZE / Sn_RXBUF_SIZE: the sizes share 16 KB per direction; beyond that the chip
  // silently fails to send or receive.
  if (tx_total > reg::kBufferMemoryKb || rx_total > reg::kBufferMemoryKb) {
    return Status::kInvalidArgument;
  }
  config_ = config;
  Registers regs(bus_);

  // Hardware reset: RSTn low for at least 500 us (datasheet §5.5.1, reset timing); 2 ms on a
  // 1 ms clock is at least 1 ms. Boards without the pin wired make reset() a no-op, so the
  // software reset below follows in any case.
  bus_.select(false);
  bus_.reset(true);
  wait_ms(clock_, config.idle, 2);
  bus_.reset(false);

  // The chip answers once its PLL has locked (at most 1 ms after reset, §5.5.1). Nothing but a
  // W5500 reads 0x04 here: a missing chip reads 0xFF (MISO pulled up) or 0x00.
  std::uint8_t version = 0;
  for (const Deadline deadline(clock_, config.reset_timeout_ms);;) {
    if (!regs.read8(reg::kBlockCommon, reg::VERSIONR, &version)) return Status::kBusError;
    if (version == reg::kVersion) break;
    if (deadline.expired()) return Status::kNoDevice;
    if (config.idle != nullptr) config.idle();
  }

  // Software reset (§4.1 MR.RST): the bit reads 1 until every register is back at its default.
  if (!regs.write8(reg::kBlockCommon, reg::MR, reg::MR_RST)) return Status::kBusError;
  for (const Deadline deadline(clock_, config.reset_timeout_ms);;) {
    std::uint8_t mr = 0;
    if (!regs.read8(reg::kBlockCommon, reg::MR, &mr)) return Status::kBusError;
    if ((mr & reg::MR_RST) == 0) break;
    if (deadline.expired()) return Status::kTimeout;
    if (config.idle != nullptr) config.idle();
  }

  // Second half of the presence check (FACTS.md, W5500): right after a reset RTR holds 0x07D0.
  // A device that answers 0x04 by accident, or a chip that did not reset, fails here.
  std::uint16_t rtr = 0;
  if (!regs.read16(reg::kBlockCommon, reg::RTR, &rtr)) return Status::kBusError;
  if (rtr != reg::kRtrReset) return Status::kNoDevice;

  Status s = write_verified(regs, reg::SHAR, config.mac.octets, sizeof config.mac.octets);
  if (s == Status::kOk) s = write_verified(regs, reg::GAR, config.gateway.octets, 4);
  if (s == Status::kOk) s = write_verified(regs, reg::SUBR, config.subnet.octets, 4);
  if (s == Status::kOk) s = write_verified(regs, reg::SIPR, config.ip.octets, 4);
  if (s != Status::kOk) return s;
  const std::uint8_t rtr_bytes[2] = {static_cast<std::uint8_t>(config.retry_time_100us >> 8),
                                     static_cast<std::uint8_t>(config.retry_time_100us & 0xFF)};
  s = write_verified(regs, reg::RTR, rtr_bytes, 2);
  if (s == Status::kOk) s = write_verified(regs, reg::RCR, &config.retry_count, 1);
  if (s != Status::kOk) return s;

  for (std::uint8_t n = 0; n < kSocketCount; ++n) {
    std::uint8_t back_tx = 0, back_rx = 0;
    if (!regs.write8(reg::block_socket(n), reg::Sn_TXBUF_SIZE, config.tx_kb[n]) ||
        !regs.write8(reg::block_socket(n), reg::Sn_RXBUF_SIZE, config.rx_kb[n]) ||
        !regs.read8(reg::block_socket(n), reg::Sn_TXBUF_SIZE, &back_tx) ||
        !regs.read8(reg::block_socket(n), reg::Sn_RXBUF_SIZE, &back_rx)) {
      return Status::kBusError;
    }
    if (back_tx != config.tx_kb[n] || back_rx != config.rx_kb[n]) return Status::kBusError;
    tx_size_[n] = static_cast<std::uint16_t>(config.tx_kb[n] * 1024u);
    rx_size_[n] = static_cast<std::uint16_t>(config.rx_kb[n] * 1024u);
  }

  // Local ports for connect(): the dynamic range, starting at a point that differs between boots
  // so that a restarted node does not reuse the 4-tuple its peer may still hold in TIME_WAIT.
  next_port_ = static_cast<std::uint16_t>(49152u + (clock_() & 0x3FFFu));
  initialized_ = true;
  return Status::kOk;
}

bool W5500::link_up() {
  Registers regs(bus_);
  std::uint8_t phy = 0;
  return regs.read8(reg::kBlockCommon, reg::PHYCFGR, &phy) && (phy & reg::PHYCFGR_LNK) != 0;
}

Status W5500::wait_link(std::uint32_t timeout_ms) {
  if (!initialized_) return Status::kNotInitialized;
  Registers regs(bus_);
  for (const Deadline deadline(clock_, timeout_ms);;) {
    std::uint8_t phy = 0;
    if (!regs.read8(reg::kBlockCommon, reg::PHYCFGR, &phy)) return Status::kBusError;
    if ((phy & reg::PHYCFGR_LNK) != 0) return Status::kOk;
    if (deadline.expired()) return Status::kTimeout;
    if (config_.idle != nullptr) config_.idle();
  }
}

bool W5500::read_version(std::uint8_t* version) {
  Registers regs(bus_);
  return regs.read8(reg::kBlockCommon, reg::VERSIONR, version);
}

Status W5500::read_network(Mac* mac, Ip4* ip, Ip4* subnet, Ip4* gateway) {
  Registers regs(bus_);
  if (!regs.read(reg::kBlockCommon, reg::SHAR, mac->octets, 6) ||
      !regs.read(reg::kBlockCommon, reg::SIPR, ip->octets, 4) ||
      !regs.read(reg::kBlockCommon, reg::SUBR, subnet->octets, 4) ||
      !regs.read(reg::kBlockCommon, reg::GAR, gateway->octets, 4)) {
    return Status::kBusError;
  }
  return Status::kOk;
}

std::uint16_t W5500::tx_size(std::uint8_t socket) const {
  return socket < kSocketCount ? tx_size_[socket] : 0;
}

std::uint16_t W5500::rx_size(std::uint8_t socket) const {
  return socket < kSocketCount ? rx_size_[socket] : 0;
}

std::uint16_t W5500::next_local_port() {
  const std::uint16_t port = next_port_;
  next_port_ = next_port_ >= 0xFFFF ? 49152 : static_cast<std::uint16_t>(next_port_ + 1);
  return port;
}

}  // namespace nmcm::drivers::w5500
