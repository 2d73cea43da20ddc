// NUCLEO-H7A3ZI-Q port: STM32H7A3ZI-Q (Cortex-M7) at 280 MHz from the ST-LINK's 8 MHz MCO, supplied
// by its SMPS; the log on USART3 (the ST-LINK virtual COM port), the W5500 on SPI1 at the Arduino
// header. Register names and bit positions from RM0455 (STM32H7A3/7B3/7B0 reference manual); the
// clock and supply settings are those of ST's own NUCLEO-H7A3ZI-Q examples (direct SMPS, VOS0,
// PLL1 M=4 N=280 P=2 Q=4, 6 wait states); pins from
// nmcm_deploy/profiles/boards/nucleo-h7a3zi-q.yaml (UM2408).
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
#define NMCM_W5500_RESET PG12
#endif
#include "nmcm/port/stm32_w5500_pins.h"

// STM32H7A3: external interrupts at positions 0..154 (RM0455, "Interrupts and events").
NMCM_VECTOR_TABLE(155);

namespace nmcm::port {
namespace {

namespace cm = cortex_m;
namespace st = stm32;

// Base addresses (RM0455, "Memory map and register boundary addresses").
constexpr std::uintptr_t kUsart3 = 0x40004800;
constexpr std::uintptr_t kSpi1 = 0x40013000;
constexpr std::uintptr_t kFlashR = 0x52002000;
constexpr std::uintptr_t kGpioA = 0x58020000;
constexpr std::uintptr_t kRcc = 0x58024400;
constexpr std::uintptr_t kPwr = 0x58024800;

// RCC (RM0455, "RCC registers").
constexpr std::uintptr_t kRccCr = kRcc + 0x000;
constexpr std::uintptr_t kRccCfgr = kRcc + 0x010;
constexpr std::uintptr_t kRccCdcfgr1 = kRcc + 0x018;
constexpr std::uintptr_t kRccCdcfgr2 = kRcc + 0x01C;
constexpr std::uintptr_t kRccSrdcfgr = kRcc + 0x020;
constexpr std::uintptr_t kRccPllckselr = kRcc + 0x028;
constexpr std::uintptr_t kRccPllcfgr = kRcc + 0x02C;
constexpr std::uintptr_t kRccPll1divr = kRcc + 0x030;
constexpr std::uintptr_t kRccPll1fracr = kRcc + 0x034;
constexpr std::uintptr_t kRccCdccip1r = kRcc + 0x050;
constexpr std::uintptr_t kRccAhb4enr = kRcc + 0x0E0;
constexpr std::uintptr_t kRccApb1lenr = kRcc + 0x0E8;
constexpr std::uintptr_t kRccApb2enr = kRcc + 0x0F0;
constexpr std::uint32_t kCrHseon = 1u << 16;
constexpr std::uint32_t kCrHserdy = 1u << 17;
constexpr std::uint32_t kCrHsebyp = 1u << 18;
constexpr std::uint32_t kCrPll1on = 1u << 24;
constexpr std::uint32_t kCrPll1rdy = 1u << 25;
constexpr std::uint32_t kCfgrSwMask = 0x7u;  // SW[2:0]; SWS[5:3] reports the switch
constexpr std::uint32_t kCfgrSwPll1 = 0x3u;
// PLLCKSELR: PLLSRC[1:0] (00 HSI, 10 HSE), DIVM1[9:4].
constexpr std::uint32_t kPllckselrMask = 0x3u | (0x3Fu << 4);
constexpr std::uint32_t kPllsrcHsi = 0x0u;
constexpr std::uint32_t kPllsrcHse = 0x2u;
// PLLCFGR, PLL1 fields: FRACEN [0], VCOSEL [1] (0 = wide VCO), RGE [3:2] (01 = 2-4 MHz input),
// DIVP1EN [16], DIVQ1EN [17], DIVR1EN [18].
constexpr std::uint32_t kPllcfgrPll1Mask = 0xFu | (0x7u << 16);
constexpr std::uint32_t kPllcfgrPll1 = (0x1u << 2) | (1u << 16) | (1u << 17);
// Bus prescalers, field value 100 = /2: CDCFGR1 CDPPRE [6:4] (APB3; CDCPRE [11:8] and HPRE [3:0]
// stay /1), CDCFGR2 CDPPRE1 [6:4] and CDPPRE2 [10:8] (APB1, APB2), SRDCFGR SRDPPRE [6:4] (APB4).
constexpr std::uint32_t kCdcfgr1 = 0x4u << 4;
constexpr std::uint32_t kCdcfgr2 = (0x4u << 4) | (0x4u << 8);
constexpr std::uint32_t kSrdcfgr = 0x4u << 4;
// CDCCIP1R SPI123SEL [14:12]: 000 pll1_q_ck (reset), 100 per_ck (hsi_ker_ck at reset).
constexpr std::uint32_t kSpi123selMask = 0x7u << 12;
constexpr std::uint32_t kSpi123selPerCk = 0x4u << 12;
constexpr std::uint32_t kApb1lenrUsart3 = 1u << 18;
constexpr std::uint32_t kApb2enrSpi1 = 1u << 12;

// PWR (RM0455, "PWR registers" and "Power supply configurations"). The -Q part's board runs the
// core from the SMPS alone ("direct SMPS supply", UM2408): PWR_CR3 SMPSEN = 1, LDOEN = 0,
// BYPASS = 0. CR3's supply bits can be written once after a power-on reset; a different value
// already locked in reads back and the write is ignored. VOS0 (SRDCR VOS = 11, the encoding of
// this family: 11 is the highest scale, unlike the H743) is needed for 280 MHz.
constexpr std::uintptr_t kPwrCsr1 = kPwr + 0x04;
constexpr std::uintptr_t kPwrCr3 = kPwr + 0x0C;
constexpr std::uintptr_t kPwrSrdcr = kPwr + 0x18;
constexpr std::uint32_t kCr3SupplyMask = 0x3Fu;  // BYPASS, LDOEN, SMPSEN, SMPSEXTHP, SMPSLEVEL
constexpr std::uint32_t kCr3DirectSmps = 1u << 2;
constexpr std::uint32_t kCsr1Actvosrdy = 1u << 13;
constexpr std::uint32_t kSrdcrVosMask = 0x3u << 14;
constexpr std::uint32_t kSrdcrVos0 = 0x3u << 14;
constexpr std::uint32_t kSrdcrVosrdy = 1u << 13;

// FLASH_ACR LATENCY [3:0] (RM0455, "FLASH read access latency"): 6 wait states for an AXI clock of
// up to 280 MHz at VOS0. WRHIGHFREQ only times flash programming, which this firmware never does
// (pyOCD programs through the debug port): it keeps its reset value.
constexpr std::uintptr_t kFlashAcr = kFlashR + 0x00;
constexpr std::uint32_t kFlashAcrLatencyMask = 0xFu;
constexpr std::uint32_t kFlashAcr6Ws = 6u;

// Clock tree: 8 MHz (HSE bypass) / DIVM1 4 = 2 MHz, x N 280 = 560 MHz VCO (wide range), / P 2 =
// 280 MHz sys_ck = CPU = AXI/AHB (CDCPRE, HPRE /1); every APB / 2 = 140 MHz (their maximum);
// / Q 4 = 140 MHz pll1_q_ck, SPI1's kernel clock. Without HSE the same PLL runs from HSI:
// 64 MHz / DIVM1 32 = 2 MHz.
constexpr std::uint32_t kHseHz = 8000000;
constexpr std::uint32_t kHsiHz = 64000000;
constexpr std::uint32_t kPllN = 280;
constexpr std::uint32_t kPllP = 2;
constexpr std::uint32_t kPllQ = 4;
constexpr std::uint32_t kPllR = 2;
constexpr std::uint32_t kSysclkHz = 280000000;
constexpr std::uint32_t kPclk1Hz = kSysclkHz / 2;
constexpr std::uint32_t kPll1QHz = 2000000 * kPllN / kPllQ;

static_assert(!nucleo::collides(st::w5500_pins::kCs), "NMCM_W5500_CS is a log UART or SPI1 pin");
static_assert(!nucleo::collides(st::w5500_pins::kReset),
              "NMCM_W5500_RESET is a log UART or SPI1 pin");

constexpr st::Gpio kGpio{kGpioA};
constexpr st::UsartH7 kLog{kUsart3};

enum class Supply { kDirectSmps, kLocked };

struct Clocks {
  std::uint32_t sysclk_hz = kHsiHz;  // the reset state: HSI 64 MHz, every prescaler /1
  std::uint32_t pclk1_hz = kHsiHz;
  std::uint32_t spi_kernel_hz = 0;  // pll1_q_ck is off at reset
  bool from_hse = false;
  Supply supply = Supply::kDirectSmps;
};

Clocks g_clocks;
st::PinSpiBus<st::SpiH7> g_w5500{st::SpiH7{kSpi1}, kGpio, st::w5500_pins::kCs,
                                 st::w5500_pins::kReset};

void enable_gpio_port(st::Pin pin) { nucleo::enable_clock(kRccAhb4enr, 1u << pin.port); }

// RM0455, "Power supply configuration" then "Voltage scaling": the supply first (until it is set,
// the voltage cannot be raised), wait ACTVOSRDY, then VOS0 and wait VOSRDY.
bool start_supply() {
  cm::reg(kPwrCr3) = (cm::reg(kPwrCr3) & ~kCr3SupplyMask) | kCr3DirectSmps;
  if ((cm::reg(kPwrCr3) & kCr3SupplyMask) != kCr3DirectSmps) {
    g_clocks.supply = Supply::kLocked;
    return false;
  }
  if (!nucleo::spin_until(kPwrCsr1, kCsr1Actvosrdy, kCsr1Actvosrdy)) {
    return false;
  }
  cm::reg(kPwrSrdcr) = (cm::reg(kPwrSrdcr) & ~kSrdcrVosMask) | kSrdcrVos0;
  return nucleo::spin_until(kPwrSrdcr, kSrdcrVosrdy, kSrdcrVosrdy);
}

// RM0455, "RCC" (PLL initialization and system clock switch). Returns false, leaving the part on
// HSI 64 MHz, if a step times out.
bool start_clocks() {
  if (!start_supply()) {
    return false;
  }
  // Wait states before the clock rises.
  cm::reg(kFlashAcr) = (cm::reg(kFlashAcr) & ~kFlashAcrLatencyMask) | kFlashAcr6Ws;
  if ((cm::reg(kFlashAcr) & kFlashAcrLatencyMask) != kFlashAcr6Ws) {
    return false;
  }
  // The ST-LINK drives an 8 MHz clock into OSC_IN: bypass the oscillator.
  cm::reg(kRccCr) |= kCrHsebyp;
  cm::reg(kRccCr) |= kCrHseon;
  g_clocks.from_hse = nucleo::spin_until(kRccCr, kCrHserdy, kCrHserdy);
  if (!g_clocks.from_hse) {
    cm::reg(kRccCr) &= ~(kCrHseon | kCrHsebyp);
  }
  const std::uint32_t divm1 = g_clocks.from_hse ? kHseHz / 2000000 : kHsiHz / 2000000;
  const std::uint32_t source = g_clocks.from_hse ? kPllsrcHse : kPllsrcHsi;
  cm::reg(kRccPllckselr) = (cm::reg(kRccPllckselr) & ~kPllckselrMask) | source | (divm1 << 4);
  cm::reg(kRccPllcfgr) = (cm::reg(kRccPllcfgr) & ~kPllcfgrPll1Mask) | kPllcfgrPll1;
  // PLL1DIVR holds each factor minus one: N [8:0], P [15:9], Q [22:16], R [30:24].
  cm::reg(kRccPll1divr) =
      (kPllN - 1) | ((kPllP - 1) << 9) | ((kPllQ - 1) << 16) | ((kPllR - 1) << 24);
  cm::reg(kRccPll1fracr) = 0;
  cm::reg(kRccCr) |= kCrPll1on;
  if (!nucleo::spin_until(kRccCr, kCrPll1rdy, kCrPll1rdy)) {
    return false;
  }
  // APB clocks halved before sys_ck rises, so that none ever exceeds 140 MHz.
  cm::reg(kRccCdcfgr1) = kCdcfgr1;
  cm::reg(kRccCdcfgr2) = kCdcfgr2;
  cm::reg(kRccSrdcfgr) = kSrdcfgr;
  cm::reg(kRccCfgr) = (cm::reg(kRccCfgr) & ~kCfgrSwMask) | kCfgrSwPll1;
  if (!nucleo::spin_until(kRccCfgr, kCfgrSwMask << 3, kCfgrSwPll1 << 3)) {
    return false;
  }
  g_clocks.sysclk_hz = kSysclkHz;
  g_clocks.pclk1_hz = kPclk1Hz;
  g_clocks.spi_kernel_hz = kPll1QHz;
  return true;
}

}  // namespace

namespace nucleo {

const char* const kBoardName = "nucleo-h7a3zi-q";

ClockStart start_clocks_and_log() {
  // Caches first: every later step, flash fetches included, runs faster with them. Nothing here
  // uses DMA, so the D-cache needs no maintenance afterwards.
  cm::enable_instruction_cache();
  cm::enable_data_cache();
  const bool clocks_ok = start_clocks();
  nucleo::enable_clock(kRccApb1lenr, kApb1lenrUsart3);
  nucleo::route_log_pins(kGpio, enable_gpio_port);
  // USART3's kernel clock is rcc_pclk1 (CDCCIP2R USART234578SEL keeps its reset value 000).
  kLog.start(g_clocks.pclk1_hz, nucleo::kLogBaud);
  const char* note = nullptr;
  if (g_clocks.supply == Supply::kLocked) {
    note = "PWR_CR3 supply locked to another configuration until power-on reset: HSI";
  } else if (!clocks_ok) {
    note = "clock setup failed, running on HSI";
  } else if (!g_clocks.from_hse) {
    note = "no HSE from the ST-LINK: PLL from HSI";
  }
  return ClockStart{g_clocks.sysclk_hz, note};
}

std::uint32_t start_w5500_bus() {
  if (g_clocks.spi_kernel_hz == 0) {
    // No PLL, so no pll1_q_ck: run SPI1 from per_ck, which is HSI at reset.
    cm::reg(kRccCdccip1r) = (cm::reg(kRccCdccip1r) & ~kSpi123selMask) | kSpi123selPerCk;
    g_clocks.spi_kernel_hz = kHsiHz;
  }
  nucleo::enable_clock(kRccApb2enr, kApb2enrSpi1);
  nucleo::route_w5500_pins(kGpio, enable_gpio_port, st::w5500_pins::kCs, st::w5500_pins::kReset);
  return g_w5500.start(g_clocks.spi_kernel_hz, st::w5500_pins::kSpiMaxHz);
}

void write_log_line(const char* text) { st::usart_write_line(kLog, text); }

void flush_log() { kLog.flush(); }

void red_led_on() { nucleo::light_red_led(kGpio, enable_gpio_port); }

SpiBus& w5500() { return g_w5500; }

}  // namespace nucleo
}  // namespace nmcm::port
