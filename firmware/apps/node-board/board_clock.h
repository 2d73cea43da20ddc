// The node's clock on a Nucleo board: SysTick milliseconds for timeouts, the DWT cycle counter for
// the STATUS time counters (compute, communication, idle in core cycles).
#pragma once

#include <cstdint>

#include "nmcm/runtime/node.h"

namespace nmcm::app {

class BoardClock final : public runtime::NodeClock {
 public:
  // `core_hz`: the clock DWT CYCCNT counts (the MCU profile's, nmcm_stage.h kMcuClockHz).
  explicit BoardClock(std::uint32_t core_hz) : core_hz_(core_hz) {}

  std::uint32_t millis() override;
  // CYCCNT is 32 bits wide and wraps every 2^32 cycles (43 s at 100 MHz, 15 s at 280 MHz); the
  // node reads the clock on every turn of its loop, but one forward or backward can take longer.
  // The milliseconds that passed since the last reading tell how many whole wraps it missed.
  std::uint64_t ticks() override;
  std::uint32_t tick_hz() override { return core_hz_; }

 private:
  std::uint32_t core_hz_;
  bool started_ = false;
  std::uint32_t last_cycles_ = 0;
  std::uint32_t last_ms_ = 0;
  std::uint64_t ticks_ = 0;
};

}  // namespace nmcm::app
