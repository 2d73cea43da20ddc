#include "registers.h"

#include "spi_frame.h"
#include "w5500_regs.h"

namespace nmcm::drivers::w5500::detail {

bool Registers::read(std::uint8_t block, std::uint16_t address, std::uint8_t* dst, std::size_t n) {
  return frame_read(bus_, block, address, dst, n);
}

bool Registers::write(std::uint8_t block, std::uint16_t address, const std::uint8_t* src,
                      std::size_t n) {
  return frame_write(bus_, block, address, src, n);
}

bool Registers::read8(std::uint8_t block, std::uint16_t address, std::uint8_t* value) {
  return read(block, address, value, 1);
}

bool Registers::write8(std::uint8_t block, std::uint16_t address, std::uint8_t value) {
  return write(block, address, &value, 1);
}

bool Registers::read16(std::uint8_t block, std::uint16_t address, std::uint16_t* value) {
  std::uint8_t b[2];
  if (!read(block, address, b, 2)) return false;
  *value = static_cast<std::uint16_t>((b[0] << 8) | b[1]);
  return true;
}

bool Registers::write16(std::uint8_t block, std::uint16_t address, std::uint16_t value) {
  const std::uint8_t b[2] = {static_cast<std::uint8_t>(value >> 8),
                             static_cast<std::uint8_t>(value & 0xFF)};
  return write(block, address, b, 2);
}

bool Registers::read16_stable(std::uint8_t block, std::uint16_t address, std::uint16_t* value) {
  // The counter only moves when a packet is sent, acknowledged or received, which takes
  // microseconds on the wire; two SPI reads back to back almost always agree at once.
  constexpr int kTries = 8;
  std::uint16_t previous = 0;
  if (!read16(block, address, &previous)) return false;
  for (int i = 0; i < kTries; ++i) {
    std::uint16_t current = 0;
    if (!read16(block, address, &current)) return false;
    if (current == previous) {
      *value = current;
      return true;
    }
    previous = current;
  }
  return false;
}

bool Registers::write_tx(std::uint8_t socket, std::uint16_t ptr, std::uint16_t size,
                         const std::uint8_t* src, std::size_t n) {
  if (size == 0 || n > size) return n == 0;
  const std::uint16_t offset = static_cast<std::uint16_t>(ptr & (size - 1));
  const std::size_t first = n < static_cast<std::size_t>(size - offset) ? n : size - offset;
  if (!write(reg::block_tx(socket), offset, src, first)) return false;
  return first == n || write(reg::block_tx(socket), 0, src + first, n - first);
}

bool Registers::read_rx(std::uint8_t socket, std::uint16_t ptr, std::uint16_t size,
                        std::uint8_t* dst, std::size_t n) {
  if (size == 0 || n > size) return n == 0;
  const std::uint16_t offset = static_cast<std::uint16_t>(ptr & (size - 1));
  const std::size_t first = n < static_cast<std::size_t>(size - offset) ? n : size - offset;
  if (!read(reg::block_rx(socket), offset, dst, first)) return false;
  return first == n || read(reg::block_rx(socket), 0, dst + first, n - first);
}

}  // namespace nmcm::drivers::w5500::detail
