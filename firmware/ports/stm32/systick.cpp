// millis() for every ARM port: SysTick interrupts once per millisecond of the processor clock.
// Under QEMU with -icount the same counter measures instructions (ports/qemu-mps2).
#include <cstdint>

#include "nmcm/port/cortex_m.h"
#include "nmcm/port/port.h"

namespace cm = nmcm::port::cortex_m;

namespace {

volatile std::uint32_t g_millis = 0;
std::uint32_t g_reload = 0;  // SysTick counts reload..0, so one period is reload + 1 ticks

}  // namespace

extern "C" void SysTick_Handler() { g_millis = g_millis + 1; }

namespace nmcm::port {

std::uint32_t millis() { return g_millis; }

namespace cortex_m {

void start_systick(std::uint32_t core_hz) {
  std::uint32_t reload = core_hz / 1000 - 1;
  if (reload > kSystMaxReload) {
    reload = kSystMaxReload;  // above 16.7 GHz: cannot happen on our parts, but never overflow
  }
  g_reload = reload;
  reg(kSystCsr) = 0;
  reg(kSystRvr) = reload;
  reg(kSystCvr) = 0;  // any write clears the counter; it reloads on the next tick
  reg(kSystCsr) = kSystCsrClksource | kSystCsrTickint | kSystCsrEnable;
}

std::uint64_t systick_ticks() {
  const std::uint32_t primask = disable_interrupts();
  std::uint32_t ms = g_millis;
  std::uint32_t current = reg(kSystCvr);
  // With interrupts masked, a wrap since the last SysTick_Handler shows as a pending SysTick:
  // count that period and read the counter again, which is now inside the new period.
  if ((reg(kIcsr) & kIcsrPendstset) != 0) {
    ms += 1;
    current = reg(kSystCvr);
  }
  restore_interrupts(primask);
  const std::uint64_t period = static_cast<std::uint64_t>(g_reload) + 1;
  return static_cast<std::uint64_t>(ms) * period + (g_reload - current);
}

}  // namespace cortex_m
}  // namespace nmcm::port
