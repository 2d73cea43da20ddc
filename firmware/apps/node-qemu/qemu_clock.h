// The node's clock under QEMU: the host's wall clock for timeouts, instructions for the STATUS
// time counters.
#pragma once

#include <cstdint>

#include "nmcm/runtime/node.h"

namespace nmcm::app {

class QemuClock final : public runtime::NodeClock {
 public:
  // `tick_hz`: the clock of the MCU the node stands for (nmcm_stage.h kMcuClockHz). The counters
  // are in instructions, so ticks / tick_hz is the time the MCU would take at one instruction per
  // cycle: a figure to compare nodes and splits by, not a prediction of the chip's time.
  explicit QemuClock(std::uint32_t tick_hz);

  // Milliseconds of the host's clock (semihosting). Virtual time runs at the pace QEMU emulates,
  // a nanosecond per instruction, and stands still while the node waits in its host link (no
  // instruction runs): the timeouts of docs/protocol.md are about the peers on the host, which
  // keep real time.
  std::uint32_t millis() override;
  // Instructions since start: CMSDK timer 1 free-running at SYSCLK (40 instructions a tick under
  // -icount shift=0), widened to 64 bits. The node never sleeps in WFI, so virtual time is
  // instructions only. Not SysTick: interrupts are
  // masked while a layer is measured (profile.h), and SysTick periods that pass then are lost.
  std::uint64_t ticks() override;
  std::uint32_t tick_hz() override { return tick_hz_; }

 private:
  std::uint32_t tick_hz_;
  std::uint32_t last_ = 0;
  std::uint64_t total_ = 0;  // timer ticks since start
};

}  // namespace nmcm::app
