// What the two Nucleo ports share (ports/stm32/nucleo.cpp) and what each board file
// (ports/nucleo-*/board.cpp) gives it. The shared part implements the port contract (port.h):
// init's order and its first log line, log, cycles, the W5500 bus, fatal (the line, the red LED,
// halt) and what happens when main returns. A board file holds only what differs: its registers,
// clock tree, pins and peripherals, behind the hooks below.
#pragma once

#include <cstdint>

#include "nmcm/port/cortex_m.h"
#include "nmcm/port/port.h"
#include "nmcm/port/stm32_gpio.h"
#include "nmcm/port/stm32_usart.h"

namespace nmcm::port::nucleo {

// What both Nucleo-144 boards wire alike (board profiles; UM1974, UM2408): USART3 on PD8/PD9, AF7,
// to the ST-LINK's virtual COM port; SPI1 on PA5/PA6/PA7, AF5, at the Arduino header (DS11581,
// DS13195: alternate function tables); LD3 (red) on PB14, lit on a fatal error.
constexpr stm32::Pin kLogTx = NMCM_PIN(PD8);
constexpr stm32::Pin kLogRx = NMCM_PIN(PD9);
constexpr stm32::Pin kSck = NMCM_PIN(PA5);
constexpr stm32::Pin kMiso = NMCM_PIN(PA6);
constexpr stm32::Pin kMosi = NMCM_PIN(PA7);
constexpr stm32::Pin kRedLed = NMCM_PIN(PB14);
constexpr std::uint32_t kLogBaud = 115200;

// Whether a pin is one of the log UART's or SPI1's (the W5500's chip select and reset must not be).
constexpr bool collides(stm32::Pin pin) {
  return stm32::same_pin(pin, kLogTx) || stm32::same_pin(pin, kLogRx) ||
         stm32::same_pin(pin, kSck) || stm32::same_pin(pin, kMiso) || stm32::same_pin(pin, kMosi);
}

// Turns a GPIO port's clock on (the enable register differs between the families).
using EnablePort = void (*)(stm32::Pin pin);

// The log UART's pins to USART3, and the W5500's SPI1, chip select and reset pins to theirs;
// the red LED on. The peripherals' own clocks are the caller's.
void route_log_pins(const stm32::Gpio& gpio, EnablePort enable_port);
void route_w5500_pins(const stm32::Gpio& gpio, EnablePort enable_port, stm32::Pin cs,
                      stm32::Pin reset);
void light_red_led(const stm32::Gpio& gpio, EnablePort enable_port);

// Polls a register until (value & mask) == expected; false after stm32::kSpinLimit reads.
inline bool spin_until(std::uintptr_t address, std::uint32_t mask, std::uint32_t expected) {
  for (std::uint32_t spin = 0; spin < stm32::kSpinLimit; ++spin) {
    if ((cortex_m::reg(address) & mask) == expected) {
      return true;
    }
  }
  return false;
}

// Sets enable bits, then reads the register back: the clock must run before the first access to
// the peripheral (STM32F41x errata, "Delay after an RCC peripheral clock enabling"; the H7A3 the
// same).
inline void enable_clock(std::uintptr_t enr, std::uint32_t mask) {
  cortex_m::reg(enr) |= mask;
  const std::uint32_t readback = cortex_m::reg(enr);
  (void)readback;
}

// What the board's clock start-up achieved, for the first log line.
struct ClockStart {
  std::uint32_t sysclk_hz;
  const char* note;  // why the clocks are not the planned ones (nullptr when they are)
};

// --- Supplied by each board file --------------------------------------------------------------

// The board's name as its log lines start (its board profile's name).
extern const char* const kBoardName;
// Caches, supply, flash wait states and PLL, then the log UART: from here on log() prints.
ClockStart start_clocks_and_log();
// SPI1 and the W5500's chip select and reset pins; returns SCK's frequency in Hz.
std::uint32_t start_w5500_bus();
// One line on the log UART, and waiting until its last byte has left.
void write_log_line(const char* text);
void flush_log();
// The red user LED on, for a fatal error.
void red_led_on();
// The W5500's bus (valid after start_w5500_bus()).
SpiBus& w5500();

}  // namespace nmcm::port::nucleo
