// STM32 SPI master for the W5500: mode 0, 8-bit frames, MSB first, software chip select, polled
// full duplex. Two generations: the F4's SPI (RM0430 "SPI registers": CR1, SR, DR) and the H7's
// SPI/I2S with FIFOs and a transfer size (RM0455 "SPI registers": CR1, CR2, CFG1, CFG2, SR, IFCR,
// TXDR, RXDR). Every wait is bounded: a bus that stops answering fails the transfer.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/port/cortex_m.h"
#include "nmcm/port/stm32_usart.h"  // kSpinLimit

namespace nmcm::port::stm32 {

// The baud-rate field shared by both generations: value k divides the kernel clock by 2^(k+1).
// Picks the fastest clock not above max_hz (the slowest, /256, if none is).
constexpr std::uint32_t spi_divider_code(std::uint32_t kernel_hz, std::uint32_t max_hz) {
  for (std::uint32_t code = 0; code < 7; ++code) {
    if ((kernel_hz >> (code + 1)) <= max_hz) {
      return code;
    }
  }
  return 7;
}

constexpr std::uint32_t spi_clock_hz(std::uint32_t kernel_hz, std::uint32_t code) {
  return kernel_hz >> (code + 1);
}

inline bool spin_until_set(std::uintptr_t address, std::uint32_t mask) {
  for (std::uint32_t spin = 0; spin < kSpinLimit; ++spin) {
    if ((cortex_m::reg(address) & mask) != 0) {
      return true;
    }
  }
  return false;
}

class SpiF4 {
 public:
  explicit constexpr SpiF4(std::uintptr_t base) : base_(base) {}

  // Returns the SCK frequency chosen.
  std::uint32_t start(std::uint32_t kernel_hz, std::uint32_t max_hz) const {
    const std::uint32_t code = spi_divider_code(kernel_hz, max_hz);
    cortex_m::reg(base_ + kCr1) = 0;
    cortex_m::reg(base_ + kCr2) = 0;
    // Master; NSS managed in software and held high internally (SSM + SSI), else MODF.
    // CPOL = CPHA = 0 (mode 0), DFF = 0 (8 bits), MSB first.
    cortex_m::reg(base_ + kCr1) = kCr1Mstr | kCr1Ssm | kCr1Ssi | (code << kCr1BrShift);
    cortex_m::reg(base_ + kCr1) |= kCr1Spe;
    return spi_clock_hz(kernel_hz, code);
  }

  bool transfer(const std::uint8_t* tx, std::uint8_t* rx, std::size_t n) const {
    for (std::size_t i = 0; i < n; ++i) {
      if (!spin_until_set(base_ + kSr, kSrTxe)) {
        return false;
      }
      cortex_m::reg(base_ + kDr) = tx != nullptr ? tx[i] : 0;
      if (!spin_until_set(base_ + kSr, kSrRxne)) {
        return false;
      }
      const std::uint8_t byte = static_cast<std::uint8_t>(cortex_m::reg(base_ + kDr));
      if (rx != nullptr) {
        rx[i] = byte;
      }
    }
    // Every byte sent has been received, so the bus is idle once BSY drops; wait for that before
    // the caller raises chip select.
    for (std::uint32_t spin = 0; spin < kSpinLimit; ++spin) {
      if ((cortex_m::reg(base_ + kSr) & kSrBsy) == 0) {
        return (cortex_m::reg(base_ + kSr) & (kSrModf | kSrOvr)) == 0;
      }
    }
    return false;
  }

 private:
  static constexpr std::uintptr_t kCr1 = 0x00;
  static constexpr std::uintptr_t kCr2 = 0x04;
  static constexpr std::uintptr_t kSr = 0x08;
  static constexpr std::uintptr_t kDr = 0x0C;
  static constexpr std::uint32_t kCr1Mstr = 1u << 2;
  static constexpr std::uint32_t kCr1BrShift = 3;
  static constexpr std::uint32_t kCr1Spe = 1u << 6;
  static constexpr std::uint32_t kCr1Ssi = 1u << 8;
  static constexpr std::uint32_t kCr1Ssm = 1u << 9;
  static constexpr std::uint32_t kSrRxne = 1u << 0;
  static constexpr std::uint32_t kSrTxe = 1u << 1;
  static constexpr std::uint32_t kSrModf = 1u << 5;
  static constexpr std::uint32_t kSrOvr = 1u << 6;
  static constexpr std::uint32_t kSrBsy = 1u << 7;

  std::uintptr_t base_;
};

class SpiH7 {
 public:
  explicit constexpr SpiH7(std::uintptr_t base) : base_(base) {}

  // `kernel_hz`: spi123_ker_ck (RCC_CDCCIP1R SPI123SEL; pll1_q_ck at reset).
  std::uint32_t start(std::uint32_t kernel_hz, std::uint32_t max_hz) const {
    const std::uint32_t code = spi_divider_code(kernel_hz, max_hz);
    cortex_m::reg(base_ + kCr1) = 0;  // SPE = 0: CFG1 and CFG2 are writable only now
    // 8-bit frames, FIFO threshold of one frame.
    cortex_m::reg(base_ + kCfg1) = (code << kCfg1MbrShift) | (7u << kCfg1DsizeShift);
    // Master, full duplex, mode 0, MSB first, software NSS, and AFCNTR so that the SPI keeps
    // driving SCK idle-low between transfers (it is disabled after each one).
    cortex_m::reg(base_ + kCfg2) = kCfg2Master | kCfg2Ssm | kCfg2Afcntr;
    cortex_m::reg(base_ + kCr1) = kCr1Ssi;  // internal NSS high, else MODF in master mode
    return spi_clock_hz(kernel_hz, code);
  }

  // RM0455 "SPI procedure": set TSIZE, enable, CSTART, move the frames, wait for EOT, clear the
  // flags, disable. TSIZE is 16 bits wide, so long transfers go in chunks.
  bool transfer(const std::uint8_t* tx, std::uint8_t* rx, std::size_t n) const {
    while (n > 0) {
      const std::size_t chunk = n < kMaxTsize ? n : kMaxTsize;
      if (!transfer_chunk(tx, rx, chunk)) {
        return false;
      }
      tx = tx != nullptr ? tx + chunk : nullptr;
      rx = rx != nullptr ? rx + chunk : nullptr;
      n -= chunk;
    }
    return true;
  }

 private:
  static constexpr std::uintptr_t kCr1 = 0x00;
  static constexpr std::uintptr_t kCr2 = 0x04;
  static constexpr std::uintptr_t kCfg1 = 0x08;
  static constexpr std::uintptr_t kCfg2 = 0x0C;
  static constexpr std::uintptr_t kSr = 0x14;
  static constexpr std::uintptr_t kIfcr = 0x18;
  static constexpr std::uintptr_t kTxdr = 0x20;
  static constexpr std::uintptr_t kRxdr = 0x30;
  static constexpr std::uint32_t kCr1Spe = 1u << 0;
  static constexpr std::uint32_t kCr1Cstart = 1u << 9;
  static constexpr std::uint32_t kCr1Ssi = 1u << 12;
  static constexpr std::uint32_t kCfg1DsizeShift = 0;
  static constexpr std::uint32_t kCfg1MbrShift = 28;
  static constexpr std::uint32_t kCfg2Master = 1u << 22;
  static constexpr std::uint32_t kCfg2Ssm = 1u << 26;
  static constexpr std::uint32_t kCfg2Afcntr = 1u << 31;
  static constexpr std::uint32_t kSrRxp = 1u << 0;
  static constexpr std::uint32_t kSrTxp = 1u << 1;
  static constexpr std::uint32_t kSrEot = 1u << 3;
  static constexpr std::uint32_t kSrOvr = 1u << 6;
  static constexpr std::uint32_t kSrModf = 1u << 9;
  static constexpr std::uint32_t kIfcrEotc = 1u << 3;
  static constexpr std::uint32_t kIfcrTxtfc = 1u << 4;
  static constexpr std::uint32_t kIfcrOvrc = 1u << 6;
  static constexpr std::uint32_t kIfcrModfc = 1u << 9;
  static constexpr std::size_t kMaxTsize = 0xFFFF;

  // The data registers take 8-bit accesses: a 32-bit write to TXDR would queue four frames.
  volatile std::uint8_t& txdr8() const {
    return *reinterpret_cast<volatile std::uint8_t*>(base_ + kTxdr);
  }
  volatile std::uint8_t& rxdr8() const {
    return *reinterpret_cast<volatile std::uint8_t*>(base_ + kRxdr);
  }

  bool transfer_chunk(const std::uint8_t* tx, std::uint8_t* rx, std::size_t n) const {
    cortex_m::reg(base_ + kCr2) = static_cast<std::uint32_t>(n);
    cortex_m::reg(base_ + kCr1) = kCr1Ssi | kCr1Spe;
    cortex_m::reg(base_ + kCr1) = kCr1Ssi | kCr1Spe | kCr1Cstart;
    bool ok = true;
    for (std::size_t i = 0; ok && i < n; ++i) {
      ok = spin_until_set(base_ + kSr, kSrTxp);
      if (ok) {
        txdr8() = tx != nullptr ? tx[i] : 0;
        ok = spin_until_set(base_ + kSr, kSrRxp);
      }
      if (ok) {
        const std::uint8_t byte = rxdr8();
        if (rx != nullptr) {
          rx[i] = byte;
        }
      }
    }
    ok = ok && spin_until_set(base_ + kSr, kSrEot);
    ok = ok && (cortex_m::reg(base_ + kSr) & (kSrOvr | kSrModf)) == 0;
    cortex_m::reg(base_ + kIfcr) = kIfcrEotc | kIfcrTxtfc | kIfcrOvrc | kIfcrModfc;
    cortex_m::reg(base_ + kCr1) = kCr1Ssi;  // SPE = 0 also flushes the FIFOs after a failure
    return ok;
  }

  std::uintptr_t base_;
};

}  // namespace nmcm::port::stm32
