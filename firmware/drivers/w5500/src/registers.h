// Layer 2: register and buffer access on top of SPI frames. 8- and 16-bit registers (big-endian,
// §4), the 16-bit counters the chip updates on its own read until two reads agree, and the socket
// TX/RX buffers as rings addressed by free-running 16-bit pointers.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/port/port.h"

namespace nmcm::drivers::w5500::detail {

class Registers {
 public:
  explicit Registers(port::SpiBus& bus) : bus_(bus) {}

  // Every call returns false if the bus failed; outputs are then left unspecified.
  bool read(std::uint8_t block, std::uint16_t address, std::uint8_t* dst, std::size_t n);
  bool write(std::uint8_t block, std::uint16_t address, const std::uint8_t* src, std::size_t n);
  bool read8(std::uint8_t block, std::uint16_t address, std::uint8_t* value);
  bool write8(std::uint8_t block, std::uint16_t address, std::uint8_t value);
  bool read16(std::uint8_t block, std::uint16_t address, std::uint16_t* value);
  bool write16(std::uint8_t block, std::uint16_t address, std::uint16_t value);

  // For Sn_TX_FSR and Sn_RX_RSR, which the chip changes while packets come and go: a read can
  // catch one byte before an update and the other after it. Reads until two successive values
  // agree (WIZnet's own driver does the same); false if they never do within a few tries.
  bool read16_stable(std::uint8_t block, std::uint16_t address, std::uint16_t* value);

  // Socket n's TX buffer: copies n bytes to the ring of `size` bytes (a power of two) starting at
  // pointer `ptr` (Sn_TX_WR). The offset in the ring is ptr & (size - 1); a copy that runs past
  // the end is split in two frames, the rest going to offset 0.
  bool write_tx(std::uint8_t socket, std::uint16_t ptr, std::uint16_t size, const std::uint8_t* src,
                std::size_t n);
  // Socket n's RX buffer: copies n bytes out of the ring starting at `ptr` (Sn_RX_RD), likewise.
  bool read_rx(std::uint8_t socket, std::uint16_t ptr, std::uint16_t size, std::uint8_t* dst,
               std::size_t n);

 private:
  port::SpiBus& bus_;
};

}  // namespace nmcm::drivers::w5500::detail
