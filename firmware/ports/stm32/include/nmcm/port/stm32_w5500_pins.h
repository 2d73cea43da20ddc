// The W5500's wiring on a Nucleo board, fixed at build time. A board's board.cpp defines its
// defaults (the board profile, nmcm_deploy/profiles/boards/<board>.yaml) and then includes this
// header; a node whose manifest overrides `w5500.spi/cs/reset` is built with compile definitions
// in the manifest's spelling, which CMake passes from cache variables of the same names:
//
//   cmake ... -DNMCM_W5500_CS=PE11 -DNMCM_W5500_RESET=PG9      (spi: -DNMCM_W5500_SPI=spi1)
//   NMCM_W5500_SPI_MAX_HZ (default 25 MHz) caps SCK, for long jumper wires.
//
// Mistakes fail the build here, not on the bench.
#pragma once

#include <cstdint>

#include "nmcm/port/stm32_gpio.h"

#if !defined(NMCM_W5500_SPI) || !defined(NMCM_W5500_CS) || !defined(NMCM_W5500_RESET)
#error "define the board's W5500 defaults before including stm32_w5500_pins.h"
#endif
#ifndef NMCM_W5500_SPI_MAX_HZ
#define NMCM_W5500_SPI_MAX_HZ 25000000
#endif

namespace nmcm::port::stm32::w5500_pins {

constexpr bool same_text(const char* a, const char* b) {
  while (*a != '\0' && *a == *b) {
    ++a;
    ++b;
  }
  return *a == *b;
}

constexpr Pin kCs = NMCM_PIN(NMCM_W5500_CS);
constexpr Pin kReset = NMCM_PIN(NMCM_W5500_RESET);
constexpr std::uint32_t kSpiMaxHz = NMCM_W5500_SPI_MAX_HZ;

static_assert(kCs.valid, "NMCM_W5500_CS must name a pin: P, a port letter A-K, a number 0-15");
static_assert(kReset.valid, "NMCM_W5500_RESET must name a pin: P, a port A-K, a number 0-15");
static_assert(!same_pin(kCs, kReset), "NMCM_W5500_CS and NMCM_W5500_RESET are the same pin");
// The Arduino header's SPI (D11-D13) is SPI1 on both Nucleo-144 boards; another SPI would need its
// own pins and alternate functions, which no board profile describes yet.
static_assert(same_text(NMCM_STRINGIFY(NMCM_W5500_SPI), "spi1") ||
                  same_text(NMCM_STRINGIFY(NMCM_W5500_SPI), "\"spi1\""),
              "NMCM_W5500_SPI: this port wires the W5500 to spi1 (Arduino D11-D13) only");
static_assert(kSpiMaxHz >= 100000, "NMCM_W5500_SPI_MAX_HZ is in Hz");

}  // namespace nmcm::port::stm32::w5500_pins
