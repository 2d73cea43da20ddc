// A timeout measured on the caller's millisecond clock, safe across the clock's 2^32 wrap.
#pragma once

#include <cstdint>

#include "nmcm/drivers/w5500/w5500.h"

namespace nmcm::drivers::w5500::detail {

class Deadline {
 public:
  Deadline(Clock clock, std::uint32_t timeout_ms)
      : clock_(clock), start_(clock()), timeout_ms_(timeout_ms) {}

  // True once more than timeout_ms whole milliseconds have passed, so that a wait lasts at least
  // its timeout even when it started late in a clock tick; a timeout of 0 is expired at once
  // ("don't wait, just look").
  bool expired() const { return timeout_ms_ == 0 || elapsed() > timeout_ms_; }
  std::uint32_t elapsed() const { return static_cast<std::uint32_t>(clock_() - start_); }
  std::uint32_t remaining() const {
    const std::uint32_t e = elapsed();
    return e >= timeout_ms_ ? 0 : timeout_ms_ - e;
  }

 private:
  Clock clock_;
  std::uint32_t start_;
  std::uint32_t timeout_ms_;
};

}  // namespace nmcm::drivers::w5500::detail
