// Layer 1: one W5500 SPI frame (datasheet §2.2). A frame is a 16-bit offset address, a control
// byte and the data; in variable-length data mode (VDM, §2.3) chip select frames it, so one frame
// moves any number of bytes from consecutive addresses of one block.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/port/port.h"
#include "w5500_regs.h"

namespace nmcm::drivers::w5500::detail {

// Control phase (§2.2.2): BSB[4:0] in bits 7..3, RWB in bit 2, OM[1:0] in bits 1..0 (VDM = 00).
constexpr std::uint8_t control_byte(std::uint8_t block, bool write) {
  return static_cast<std::uint8_t>(((block & 0x1F) << 3) | (write ? reg::kRwbWrite : 0) |
                                   reg::kOmVdm);
}

// Reads n bytes starting at `address` of `block`. False if the bus failed.
bool frame_read(port::SpiBus& bus, std::uint8_t block, std::uint16_t address, std::uint8_t* dst,
                std::size_t n);
// Writes n bytes starting at `address` of `block`. False if the bus failed.
bool frame_write(port::SpiBus& bus, std::uint8_t block, std::uint16_t address,
                 const std::uint8_t* src, std::size_t n);

}  // namespace nmcm::drivers::w5500::detail
