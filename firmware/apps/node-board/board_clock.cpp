#include "board_clock.h"

#include "nmcm/port/port.h"

namespace nmcm::app {

std::uint32_t BoardClock::millis() { return port::millis(); }

std::uint64_t BoardClock::ticks() {
  const std::uint32_t ms = port::millis();
  const std::uint32_t cycles = port::cycles();
  if (!started_) {
    started_ = true;
  } else {
    const std::uint32_t delta = cycles - last_cycles_;  // modulo 2^32
    // Cycles the elapsed milliseconds stand for; off by at most a couple of milliseconds' worth,
    // far less than half a wrap, so rounding finds the number of wraps exactly.
    const std::uint64_t expected = static_cast<std::uint64_t>(ms - last_ms_) * (core_hz_ / 1000u);
    std::uint64_t wraps = 0;
    if (expected > delta) {
      wraps = (expected - delta + (std::uint64_t{1} << 31)) >> 32;
    }
    ticks_ += delta + (wraps << 32);
  }
  last_cycles_ = cycles;
  last_ms_ = ms;
  return ticks_;
}

}  // namespace nmcm::app
