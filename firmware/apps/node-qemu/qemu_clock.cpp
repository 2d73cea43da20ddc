#include "qemu_clock.h"

#include "nmcm/port/qemu_mps2.h"

namespace nmcm::app {

namespace qemu = port::qemu;

// Timer 1 counts the node's instructions; timer 0 is the profile's stopwatch
// (stage_stopwatch.cpp).
constexpr unsigned kCounterTimer = 1;

QemuClock::QemuClock(std::uint32_t tick_hz) : tick_hz_(tick_hz) {
  qemu::restart_timer(kCounterTimer);
}

std::uint32_t QemuClock::millis() {
  return static_cast<std::uint32_t>(qemu::host_nanoseconds() / 1000000u);
}

std::uint64_t QemuClock::ticks() {
  // The node reads its clock many times per turn of its loop, far more often than the counter's
  // 2^32 ticks (171 s of virtual time) wrap: the difference modulo 2^32 is the whole advance.
  const std::uint32_t now = qemu::timer_ticks(kCounterTimer);
  total_ += now - last_;
  last_ = now;
  return total_ * qemu::kNanosecondsPerTick;
}

}  // namespace nmcm::app
