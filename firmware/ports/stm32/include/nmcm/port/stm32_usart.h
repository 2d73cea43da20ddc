// STM32 USART, transmit side only (the log), register level and polled. Two generations of the
// peripheral: the F4's (RM0430 "USART registers": SR, DR, BRR, CR1) and the H7's (RM0455 "USART
// registers": CR1, BRR, ISR, TDR, with a FIFO and a prescaler). Both run 8N1, oversampling by 16.
#pragma once

#include <cstdint>

#include "nmcm/port/cortex_m.h"

namespace nmcm::port::stm32 {

// Upper bound on status polls before a peripheral counts as stuck: well over a millisecond at any
// clock these parts run, far longer than one byte at 115200 baud or one SPI byte.
constexpr std::uint32_t kSpinLimit = 1000000;

// BRR for oversampling by 16: the divider is kernel_hz / baud, rounded (RM0430 and RM0455, "USART
// baud rate generation"; on the F4 the mantissa/fraction split of BRR is the same number).
constexpr std::uint32_t usart_brr(std::uint32_t kernel_hz, std::uint32_t baud) {
  return (kernel_hz + baud / 2) / baud;
}

class UsartF4 {
 public:
  explicit constexpr UsartF4(std::uintptr_t base) : base_(base) {}

  void start(std::uint32_t kernel_hz, std::uint32_t baud) const {
    cortex_m::reg(base_ + kCr1) = 0;
    cortex_m::reg(base_ + kCr2) = 0;  // 1 stop bit
    cortex_m::reg(base_ + kCr3) = 0;
    cortex_m::reg(base_ + kBrr) = usart_brr(kernel_hz, baud);
    cortex_m::reg(base_ + kCr1) = kCr1Ue | kCr1Te | kCr1Re;
  }

  // False if the transmitter never became ready (clock off, peripheral stuck).
  bool write_byte(std::uint8_t byte) const {
    for (std::uint32_t spin = 0; spin < kSpinLimit; ++spin) {
      if ((cortex_m::reg(base_ + kSr) & kSrTxe) != 0) {
        cortex_m::reg(base_ + kDr) = byte;
        return true;
      }
    }
    return false;
  }

  // Waits until the last byte has left the shift register (before a reset or a halt).
  void flush() const {
    for (std::uint32_t spin = 0; spin < kSpinLimit; ++spin) {
      if ((cortex_m::reg(base_ + kSr) & kSrTc) != 0) {
        return;
      }
    }
  }

 private:
  static constexpr std::uintptr_t kSr = 0x00;
  static constexpr std::uintptr_t kDr = 0x04;
  static constexpr std::uintptr_t kBrr = 0x08;
  static constexpr std::uintptr_t kCr1 = 0x0C;
  static constexpr std::uintptr_t kCr2 = 0x10;
  static constexpr std::uintptr_t kCr3 = 0x14;
  static constexpr std::uint32_t kSrTc = 1u << 6;
  static constexpr std::uint32_t kSrTxe = 1u << 7;
  static constexpr std::uint32_t kCr1Re = 1u << 2;
  static constexpr std::uint32_t kCr1Te = 1u << 3;
  static constexpr std::uint32_t kCr1Ue = 1u << 13;

  std::uintptr_t base_;
};

class UsartH7 {
 public:
  explicit constexpr UsartH7(std::uintptr_t base) : base_(base) {}

  // `kernel_hz`: the USART's kernel clock (RCC_CDCCIP2R USART234578SEL; rcc_pclk1 at reset).
  void start(std::uint32_t kernel_hz, std::uint32_t baud) const {
    cortex_m::reg(base_ + kCr1) = 0;  // UE = 0: BRR, PRESC and the frame format are writable
    cortex_m::reg(base_ + kCr2) = 0;
    cortex_m::reg(base_ + kCr3) = 0;
    cortex_m::reg(base_ + kPresc) = 0;  // kernel clock not divided
    cortex_m::reg(base_ + kBrr) = usart_brr(kernel_hz, baud);
    cortex_m::reg(base_ + kCr1) = kCr1Ue | kCr1Te | kCr1Re;
  }

  bool write_byte(std::uint8_t byte) const {
    for (std::uint32_t spin = 0; spin < kSpinLimit; ++spin) {
      if ((cortex_m::reg(base_ + kIsr) & kIsrTxe) != 0) {
        cortex_m::reg(base_ + kTdr) = byte;
        return true;
      }
    }
    return false;
  }

  void flush() const {
    for (std::uint32_t spin = 0; spin < kSpinLimit; ++spin) {
      if ((cortex_m::reg(base_ + kIsr) & kIsrTc) != 0) {
        return;
      }
    }
  }

 private:
  static constexpr std::uintptr_t kCr1 = 0x00;
  static constexpr std::uintptr_t kCr2 = 0x04;
  static constexpr std::uintptr_t kCr3 = 0x08;
  static constexpr std::uintptr_t kBrr = 0x0C;
  static constexpr std::uintptr_t kIsr = 0x1C;
  static constexpr std::uintptr_t kTdr = 0x28;
  static constexpr std::uintptr_t kPresc = 0x2C;
  static constexpr std::uint32_t kIsrTc = 1u << 6;
  static constexpr std::uint32_t kIsrTxe = 1u << 7;  // TXE (FIFO off) / TXFNF (FIFO on)
  static constexpr std::uint32_t kCr1Ue = 1u << 0;
  static constexpr std::uint32_t kCr1Re = 1u << 2;
  static constexpr std::uint32_t kCr1Te = 1u << 3;

  std::uintptr_t base_;
};

// One log line: the text, then CR LF (what terminal programs on the ST-LINK VCP expect).
template <class Usart>
void usart_write_line(const Usart& usart, const char* text) {
  for (const char* c = text; *c != '\0'; ++c) {
    if (!usart.write_byte(static_cast<std::uint8_t>(*c))) {
      return;
    }
  }
  usart.write_byte('\r');
  usart.write_byte('\n');
}

}  // namespace nmcm::port::stm32
