// The contract every ARM port (qemu-mps2, nucleo-f413zh, nucleo-h7a3zi-q) supplies; on the host the
// W5500 emulator (tools/w5500_emulator) is an SpiBus of this contract.
// The portable core never includes a board header: it sees only this file. A port implements the
// free functions at link time and hands out its SPI bus as an SpiBus, so that the W5500 driver can
// equally run on a board's SPI peripheral or on the host's register-level W5500 emulator.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nmcm::port {

// Board bring-up: clocks, GPIO, the W5500's SPI and pins, the log UART, the cycle counter.
void init();

// One line of log text (no newline needed): USART3 on the Nucleo boards, semihosting under QEMU,
// stderr on the host.
void log(const char* text);

// Monotonic milliseconds since init(); wraps after ~49 days, compare with subtraction.
std::uint32_t millis();

// Core clock cycles (DWT CYCCNT on Cortex-M7/M4 boards); 0 where no counter exists (QEMU).
std::uint32_t cycles();

// Stop for good after an unrecoverable error, leaving `why` in the log.
[[noreturn]] void fatal(const char* why);

// A full-duplex SPI bus with one chip select, as the W5500 sees it.
class SpiBus {
 public:
  // Drive chip select: true = selected (the pin low, for the W5500).
  virtual void select(bool selected) = 0;
  // Clock n bytes out of tx (zeros if tx is null) and into rx (discarded if rx is null).
  // Returns false if the bus failed (a timeout on the peripheral's flags).
  virtual bool transfer(const std::uint8_t* tx, std::uint8_t* rx, std::size_t n) = 0;
  // Hold the chip in reset (true) or release it (false).
  virtual void reset(bool asserted) = 0;

 protected:
  ~SpiBus() = default;
};

// The bus the board's W5500 is on (pins from the board profile, or the manifest's overrides,
// baked into the generated node header at build time).
SpiBus& w5500_bus();

}  // namespace nmcm::port
