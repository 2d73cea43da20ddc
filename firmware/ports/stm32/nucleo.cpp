// The port contract (port.h) on the two Nucleo boards, over the hooks each board file supplies
// (nucleo.h): the order of the bring-up, the log, the cycle counter, fatal errors and the end of
// main are the same on every Nucleo board; registers, clocks and pins are not.
#include "nmcm/port/nucleo.h"

#include <cstdint>

#include "nmcm/port/cortex_m.h"
#include "nmcm/port/line.h"
#include "nmcm/port/port.h"

namespace nmcm::port {
namespace {

namespace cm = cortex_m;

bool g_log_ready = false;

// Stops for good: no interrupt left to wake the core, so WFI sleeps (a debugger can still attach).
[[noreturn]] void halt() {
  cm::disable_interrupts();
  cm::reg(cm::kSystCsr) = 0;
  for (;;) {
    __asm volatile("wfi");
  }
}

// Alternate functions of USART3 and SPI1 on these pins (the same on both families).
constexpr std::uint32_t kAfUsart3 = 7;
constexpr std::uint32_t kAfSpi1 = 5;

}  // namespace

namespace nucleo {

void route_log_pins(const stm32::Gpio& gpio, EnablePort enable_port) {
  enable_port(kLogTx);
  enable_port(kLogRx);
  gpio.alternate(kLogTx, kAfUsart3, stm32::Gpio::Speed::kLow);
  gpio.alternate(kLogRx, kAfUsart3, stm32::Gpio::Speed::kLow);
}

void route_w5500_pins(const stm32::Gpio& gpio, EnablePort enable_port, stm32::Pin cs,
                      stm32::Pin reset) {
  enable_port(kSck);
  enable_port(kMiso);
  enable_port(kMosi);
  enable_port(cs);
  enable_port(reset);
  gpio.alternate(kSck, kAfSpi1, stm32::Gpio::Speed::kHigh);
  gpio.alternate(kMiso, kAfSpi1, stm32::Gpio::Speed::kHigh);
  gpio.alternate(kMosi, kAfSpi1, stm32::Gpio::Speed::kHigh);
}

void light_red_led(const stm32::Gpio& gpio, EnablePort enable_port) {
  enable_port(kRedLed);
  gpio.output(kRedLed, true, stm32::Gpio::Speed::kLow);
}

}  // namespace nucleo

void init() {
  const nucleo::ClockStart clocks = nucleo::start_clocks_and_log();
  g_log_ready = true;
  cm::start_systick(clocks.sysclk_hz);
  cm::enable_cycle_counter();
  const std::uint32_t sck_hz = nucleo::start_w5500_bus();

  Line<160> line;
  line.text(nucleo::kBoardName).text(": sysclk ").dec(clocks.sysclk_hz).text(" Hz");
  if (clocks.note != nullptr) {
    line.text(" (").text(clocks.note).text(")");
  }
  line.text(", W5500 SPI1 ").dec(sck_hz).text(" Hz");
  log(line.c_str());
}

void log(const char* text) {
  if (g_log_ready) {
    nucleo::write_log_line(text);
  }
}

std::uint32_t cycles() { return cm::reg(cm::kDwtCyccnt); }

SpiBus& w5500_bus() { return nucleo::w5500(); }

void fatal(const char* why) {
  Line<224> line;
  log(line.text("fatal: ").text(why).c_str());
  if (g_log_ready) {
    nucleo::flush_log();
  }
  nucleo::red_led_on();
  halt();
}

namespace cortex_m {

void on_main_return(int code) {
  Line<48> line;
  log(line.text("main returned ").sdec(code).c_str());
  if (g_log_ready) {
    nucleo::flush_log();
  }
  halt();
}

}  // namespace cortex_m
}  // namespace nmcm::port
