// The W5500's SpiBus (port.h) on an STM32: an SPI peripheral plus two GPIO outputs, chip select
// and reset, both active low. Boards instantiate it with their SPI generation (SpiF4 or SpiH7).
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/port/port.h"
#include "nmcm/port/stm32_gpio.h"

namespace nmcm::port::stm32 {

template <class Spi>
class PinSpiBus final : public SpiBus {
 public:
  // constexpr: a static PinSpiBus is constant-initialised, with no constructor to run at reset.
  constexpr PinSpiBus(Spi spi, Gpio gpio, Pin cs, Pin reset)
      : spi_(spi), gpio_(gpio), cs_(cs), reset_(reset) {}

  // Drives CS high and reset high (released) before they become outputs, then starts the SPI.
  // Returns the SCK frequency, at most max_hz.
  std::uint32_t start(std::uint32_t kernel_hz, std::uint32_t max_hz) {
    gpio_.output(cs_, true, Gpio::Speed::kHigh);
    gpio_.output(reset_, true, Gpio::Speed::kLow);
    started_ = true;
    return spi_.start(kernel_hz, max_hz);
  }

  void select(bool selected) override { gpio_.write(cs_, !selected); }

  bool transfer(const std::uint8_t* tx, std::uint8_t* rx, std::size_t n) override {
    return started_ && spi_.transfer(tx, rx, n);
  }

  void reset(bool asserted) override { gpio_.write(reset_, !asserted); }

 private:
  Spi spi_;
  Gpio gpio_;
  Pin cs_;
  Pin reset_;
  bool started_ = false;
};

}  // namespace nmcm::port::stm32
