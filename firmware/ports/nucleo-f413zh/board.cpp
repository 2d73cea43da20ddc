// NUCLEO-F413ZH port: STM32F413ZH (Cortex-M4F) at 100 MHz from the ST-LINK's 8 MHz MCO, the log on
// USART3 (the ST-LINK virtual COM port), the W5500 on SPI1 at the Arduino header. Register names
// and bit positions from RM0430 (STM32F413/423 reference manual); pins from the board profile
// nmcm_deploy/profiles/boards/nucleo-f413zh.yaml (UM1974).
#include <cstdint>

#include "nmcm/port/cortex_m.h"
#include "nmcm/port/nucleo.h"
#include "nmcm/port/port.h"
#include "nmcm/port/stm32_gpio.h"
#include "nmcm/port/stm32_spi.h"
#include "nmcm/port/stm32_spi_bus.h"
#include "nmcm/port/stm32_usart.h"
#include "nmcm/port/vectors.h"

// The W5500's default wiring (board profile `w5500:`); overridable, see stm32_w5500_pins.h.
#ifndef NMCM_W5500_SPI
#define NMCM_W5500_SPI spi1
#endif
#ifndef NMCM_W5500_CS
#define NMCM_W5500_CS PD14
#endif
#ifndef NMCM_W5500_RESET
#define NMCM_W5500_RESET PF13
#endif
#include "nmcm/port/stm32_w5500_pins.h"

// STM32F413: 102 external interrupts, positions 0..101 (RM0430, "Interrupts and events").
NMCM_VECTOR_TABLE(102);

namespace nmcm::port {
namespace {

namespace cm = cortex_m;
namespace st = stm32;

// Base addresses (RM0430, "Memory map": register boundary addresses).
constexpr std::uintptr_t kUsart3 = 0x40004800;
constexpr std::uintptr_t kPwr = 0x40007000;
constexpr std::uintptr_t kSpi1 = 0x40013000;
constexpr std::uintptr_t kGpioA = 0x40020000;
constexpr std::uintptr_t kRcc = 0x40023800;
constexpr std::uintptr_t kFlashR = 0x40023C00;

// RCC (RM0430, "RCC registers").
constexpr std::uintptr_t kRccCr = kRcc + 0x00;
constexpr std::uintptr_t kRccPllcfgr = kRcc + 0x04;
constexpr std::uintptr_t kRccCfgr = kRcc + 0x08;
constexpr std::uintptr_t kRccAhb1enr = kRcc + 0x30;
constexpr std::uintptr_t kRccApb1enr = kRcc + 0x40;
constexpr std::uintptr_t kRccApb2enr = kRcc + 0x44;
constexpr std::uint32_t kCrHseon = 1u << 16;
constexpr std::uint32_t kCrHserdy = 1u << 17;
constexpr std::uint32_t kCrHsebyp = 1u << 18;
constexpr std::uint32_t kCrPllon = 1u << 24;
constexpr std::uint32_t kCrPllrdy = 1u << 25;
constexpr std::uint32_t kPllcfgrPllsrcHse = 1u << 22;
constexpr std::uint32_t kCfgrSwMask = 0x3u;  // SW[1:0]; SWS[3:2] reports the switch
constexpr std::uint32_t kCfgrSwPll = 0x2u;
constexpr std::uint32_t kCfgrPrescalerMask = (0xFu << 4) | (0x7u << 10) | (0x7u << 13);
constexpr std::uint32_t kCfgrPpre1Div2 = 0x4u << 10;  // HPRE = /1 (0), PPRE2 = /1 (0)
constexpr std::uint32_t kApb1enrUsart3 = 1u << 18;
constexpr std::uint32_t kApb1enrPwr = 1u << 28;
constexpr std::uint32_t kApb2enrSpi1 = 1u << 12;

// PWR (RM0430, "PWR registers"): VOS[15:14] = 11 is scale 1, needed above 84 MHz; it takes effect
// once the PLL runs, and VOSRDY then says the regulator has settled.
constexpr std::uintptr_t kPwrCr = kPwr + 0x00;
constexpr std::uintptr_t kPwrCsr = kPwr + 0x04;
constexpr std::uint32_t kPwrCrVosMask = 0x3u << 14;
constexpr std::uint32_t kPwrCrVosScale1 = 0x3u << 14;
constexpr std::uint32_t kPwrCsrVosrdy = 1u << 14;

// FLASH_ACR (RM0430, "Flash interface registers" and "Relation between CPU clock frequency and
// Flash memory read time"): 3 wait states for 90 < HCLK <= 100 MHz at 2.7-3.6 V; prefetch and the
// instruction and data caches (the ART accelerator) on.
constexpr std::uintptr_t kFlashAcr = kFlashR + 0x00;
constexpr std::uint32_t kFlashAcrLatencyMask = 0xFu;
constexpr std::uint32_t kFlashAcr3Ws = 3u;
constexpr std::uint32_t kFlashAcrPrften = 1u << 8;
constexpr std::uint32_t kFlashAcrIcen = 1u << 9;
constexpr std::uint32_t kFlashAcrDcen = 1u << 10;

// Clock tree: 8 MHz (HSE bypass) / M 4 = 2 MHz PLL input (RM0430 recommends 2 MHz to limit
// jitter), x N 100 = 200 MHz VCO, / P 2 = 100 MHz SYSCLK = HCLK; APB1 / 2 = 50 MHz (its maximum),
// APB2 / 1 = 100 MHz. Q = 4 (50 MHz, unused: no USB) and R = 2 keep their fields legal. Without
// HSE the same PLL runs from HSI: 16 MHz / M 8 = 2 MHz.
constexpr std::uint32_t kHseHz = 8000000;
constexpr std::uint32_t kHsiHz = 16000000;
constexpr std::uint32_t kPllN = 100;
constexpr std::uint32_t kPllQ = 4;
constexpr std::uint32_t kPllR = 2;
constexpr std::uint32_t kSysclkHz = 100000000;
constexpr std::uint32_t kPclk1Hz = kSysclkHz / 2;
constexpr std::uint32_t kPclk2Hz = kSysclkHz;

static_assert(!nucleo::collides(st::w5500_pins::kCs), "NMCM_W5500_CS is a log UART or SPI1 pin");
static_assert(!nucleo::collides(st::w5500_pins::kReset),
              "NMCM_W5500_RESET is a log UART or SPI1 pin");
static_assert(st::w5500_pins::kCs.port <= 7 && st::w5500_pins::kReset.port <= 7,
              "the STM32F413ZH has GPIO ports A..H");

constexpr st::Gpio kGpio{kGpioA};
constexpr st::UsartF4 kLog{kUsart3};

struct Clocks {
  std::uint32_t sysclk_hz = kHsiHz;  // the reset state: HSI, every prescaler /1
  std::uint32_t pclk1_hz = kHsiHz;
  std::uint32_t pclk2_hz = kHsiHz;
  bool from_hse = false;
};

Clocks g_clocks;
st::PinSpiBus<st::SpiF4> g_w5500{st::SpiF4{kSpi1}, kGpio, st::w5500_pins::kCs,
                                 st::w5500_pins::kReset};

void enable_gpio_port(st::Pin pin) { nucleo::enable_clock(kRccAhb1enr, 1u << pin.port); }

// RM0430, "Clocks" (PLL configuration) and "Relation between CPU clock frequency and Flash memory
// read time": regulator scale and wait states first, then the PLL, then the switch. Returns false
// (leaving the part on HSI 16 MHz) if a step times out.
bool start_clocks() {
  nucleo::enable_clock(kRccApb1enr, kApb1enrPwr);
  cm::reg(kPwrCr) = (cm::reg(kPwrCr) & ~kPwrCrVosMask) | kPwrCrVosScale1;

  const std::uint32_t acr = kFlashAcr3Ws | kFlashAcrPrften | kFlashAcrIcen | kFlashAcrDcen;
  cm::reg(kFlashAcr) = acr;
  if ((cm::reg(kFlashAcr) & kFlashAcrLatencyMask) != kFlashAcr3Ws) {
    return false;
  }

  // The ST-LINK drives an 8 MHz clock into OSC_IN: bypass the oscillator, do not start a crystal.
  cm::reg(kRccCr) |= kCrHsebyp;
  cm::reg(kRccCr) |= kCrHseon;
  g_clocks.from_hse = nucleo::spin_until(kRccCr, kCrHserdy, kCrHserdy);
  if (!g_clocks.from_hse) {
    cm::reg(kRccCr) &= ~(kCrHseon | kCrHsebyp);
  }
  const std::uint32_t pll_m = g_clocks.from_hse ? kHseHz / 2000000 : kHsiHz / 2000000;
  // PLLP field 00 = /2.
  cm::reg(kRccPllcfgr) = pll_m | (kPllN << 6) | (g_clocks.from_hse ? kPllcfgrPllsrcHse : 0) |
                         (kPllQ << 24) | (kPllR << 28);
  cm::reg(kRccCfgr) = (cm::reg(kRccCfgr) & ~kCfgrPrescalerMask) | kCfgrPpre1Div2;
  cm::reg(kRccCr) |= kCrPllon;
  if (!nucleo::spin_until(kRccCr, kCrPllrdy, kCrPllrdy) ||
      !nucleo::spin_until(kPwrCsr, kPwrCsrVosrdy, kPwrCsrVosrdy)) {
    return false;
  }
  cm::reg(kRccCfgr) = (cm::reg(kRccCfgr) & ~kCfgrSwMask) | kCfgrSwPll;
  if (!nucleo::spin_until(kRccCfgr, kCfgrSwMask << 2, kCfgrSwPll << 2)) {
    return false;
  }
  g_clocks = Clocks{kSysclkHz, kPclk1Hz, kPclk2Hz, g_clocks.from_hse};
  return true;
}

}  // namespace

namespace nucleo {

const char* const kBoardName = "nucleo-f413zh";

ClockStart start_clocks_and_log() {
  const bool clocks_ok = start_clocks();
  nucleo::enable_clock(kRccApb1enr, kApb1enrUsart3);
  nucleo::route_log_pins(kGpio, enable_gpio_port);
  kLog.start(g_clocks.pclk1_hz, nucleo::kLogBaud);
  const char* note = nullptr;
  if (!clocks_ok) {
    note = "PLL setup failed, running on HSI";
  } else if (!g_clocks.from_hse) {
    note = "no HSE from the ST-LINK: PLL from HSI";
  }
  return ClockStart{g_clocks.sysclk_hz, note};
}

std::uint32_t start_w5500_bus() {
  nucleo::enable_clock(kRccApb2enr, kApb2enrSpi1);
  nucleo::route_w5500_pins(kGpio, enable_gpio_port, st::w5500_pins::kCs, st::w5500_pins::kReset);
  return g_w5500.start(g_clocks.pclk2_hz, st::w5500_pins::kSpiMaxHz);
}

void write_log_line(const char* text) { st::usart_write_line(kLog, text); }

void flush_log() { kLog.flush(); }

void red_led_on() { nucleo::light_red_led(kGpio, enable_gpio_port); }

SpiBus& w5500() { return g_w5500; }

}  // namespace nucleo
}  // namespace nmcm::port
