// STM32 GPIO, register level. The F4 and H7 families share the GPIO block: ten registers at the
// same offsets, ports 0x400 apart (RM0430 "GPIO registers"; RM0455 "GPIO registers"). Only the
// base of port A and the RCC clock-enable register differ, and the board supplies both.
#pragma once

#include <cstdint>

#include "nmcm/port/cortex_m.h"

// Pin names reach the code as bare tokens from compile definitions (-DNMCM_W5500_CS=PD14, the
// spelling of the board profiles and the manifest): NMCM_PIN(PD14) turns one into a Pin at compile
// time, and a misspelt name fails the build through the static_assert next to its use.
#define NMCM_STRINGIFY_(x) #x
#define NMCM_STRINGIFY(x) NMCM_STRINGIFY_(x)
#define NMCM_PIN(name) (::nmcm::port::stm32::parse_pin(NMCM_STRINGIFY(name)))

namespace nmcm::port::stm32 {

struct Pin {
  std::uint8_t port;    // 0 = A, 1 = B, ...
  std::uint8_t number;  // 0..15
  bool valid;
};

// "PD14" (or "\"PD14\"", when the definition was quoted) -> {3, 14, true}; anything else invalid.
// Accepts ports A..K, the schema's range (schemas/cluster.schema.json, w5500.cs).
constexpr Pin parse_pin(const char* s) {
  Pin invalid{0, 0, false};
  if (*s == '"') {
    ++s;
  }
  if (s[0] != 'P' || s[1] < 'A' || s[1] > 'K' || s[2] < '0' || s[2] > '9') {
    return invalid;
  }
  std::uint8_t number = static_cast<std::uint8_t>(s[2] - '0');
  const char* rest = s + 3;
  if (*rest >= '0' && *rest <= '9') {
    if (number == 0) {
      return invalid;  // no leading zeros: "PD014" is a typo, not pin 14
    }
    number = static_cast<std::uint8_t>(number * 10 + (*rest - '0'));
    ++rest;
  }
  if (*rest == '"') {
    ++rest;
  }
  if (*rest != '\0' || number > 15) {
    return invalid;
  }
  return Pin{static_cast<std::uint8_t>(s[1] - 'A'), number, true};
}

constexpr bool same_pin(Pin a, Pin b) { return a.port == b.port && a.number == b.number; }

class Gpio {
 public:
  enum class Speed : std::uint32_t { kLow = 0, kMedium = 1, kHigh = 2, kVeryHigh = 3 };

  explicit constexpr Gpio(std::uintptr_t port_a_base) : port_a_base_(port_a_base) {}

  // Push-pull output, driven to `high` before the pin switches to output so that it never
  // glitches (a chip select or reset line must not pulse at boot).
  void output(Pin pin, bool high, Speed speed) const {
    write(pin, high);
    set_field(pin, kOspeedr, pin.number, 2, static_cast<std::uint32_t>(speed));
    cortex_m::reg(base(pin) + kOtyper) &= ~(1u << pin.number);
    set_field(pin, kPupdr, pin.number, 2, 0);
    set_field(pin, kModer, pin.number, 2, kModeOutput);
  }

  // Alternate function `af` (0..15) from the datasheet's AF table, no pull.
  void alternate(Pin pin, std::uint32_t af, Speed speed) const {
    set_field(pin, kOspeedr, pin.number, 2, static_cast<std::uint32_t>(speed));
    cortex_m::reg(base(pin) + kOtyper) &= ~(1u << pin.number);
    set_field(pin, kPupdr, pin.number, 2, 0);
    const std::uintptr_t afr = pin.number < 8 ? kAfrl : kAfrh;
    set_field(pin, afr, pin.number % 8, 4, af);
    set_field(pin, kModer, pin.number, 2, kModeAlternate);
  }

  // BSRR: one write, no read-modify-write race with other pins of the port.
  void write(Pin pin, bool high) const {
    cortex_m::reg(base(pin) + kBsrr) = high ? (1u << pin.number) : (1u << (pin.number + 16));
  }

  bool read(Pin pin) const { return (cortex_m::reg(base(pin) + kIdr) >> pin.number) & 1u; }

 private:
  static constexpr std::uintptr_t kModer = 0x00;
  static constexpr std::uintptr_t kOtyper = 0x04;
  static constexpr std::uintptr_t kOspeedr = 0x08;
  static constexpr std::uintptr_t kPupdr = 0x0C;
  static constexpr std::uintptr_t kIdr = 0x10;
  static constexpr std::uintptr_t kBsrr = 0x18;
  static constexpr std::uintptr_t kAfrl = 0x20;
  static constexpr std::uintptr_t kAfrh = 0x24;
  static constexpr std::uint32_t kModeOutput = 1;
  static constexpr std::uint32_t kModeAlternate = 2;

  std::uintptr_t base(Pin pin) const { return port_a_base_ + 0x400u * pin.port; }

  // Read-modify-write of one `width`-bit field of a register that holds one field per pin.
  void set_field(Pin pin, std::uintptr_t offset, std::uint32_t index, std::uint32_t width,
                 std::uint32_t value) const {
    volatile std::uint32_t& r = cortex_m::reg(base(pin) + offset);
    const std::uint32_t mask = ((1u << width) - 1u) << (index * width);
    r = (r & ~mask) | ((value << (index * width)) & mask);
  }

  std::uintptr_t port_a_base_;
};

}  // namespace nmcm::port::stm32
