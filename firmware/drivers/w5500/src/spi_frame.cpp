#include "spi_frame.h"

namespace nmcm::drivers::w5500::detail {
namespace {

bool frame(port::SpiBus& bus, std::uint8_t block, std::uint16_t address, bool write,
           const std::uint8_t* src, std::uint8_t* dst, std::size_t n) {
  // Address phase MSB first, then the control phase (§2.2.1, §2.2.2).
  const std::uint8_t header[3] = {static_cast<std::uint8_t>(address >> 8),
                                  static_cast<std::uint8_t>(address & 0xFF),
                                  control_byte(block, write)};
  bus.select(true);
  bool ok = bus.transfer(header, nullptr, sizeof header);
  if (ok && n > 0) ok = write ? bus.transfer(src, nullptr, n) : bus.transfer(nullptr, dst, n);
  // Deselect even after a failure: in VDM, CS going high is what ends the frame (§2.3), and a
  // frame left open would swallow the next one's header as data.
  bus.select(false);
  return ok;
}

}  // namespace

bool frame_read(port::SpiBus& bus, std::uint8_t block, std::uint16_t address, std::uint8_t* dst,
                std::size_t n) {
  return frame(bus, block, address, false, nullptr, dst, n);
}

bool frame_write(port::SpiBus& bus, std::uint8_t block, std::uint16_t address,
                 const std::uint8_t* src, std::size_t n) {
  return frame(bus, block, address, true, src, nullptr, n);
}

}  // namespace nmcm::drivers::w5500::detail
