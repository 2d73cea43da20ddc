// The stopwatch of a Stage's pieces of work on a Nucleo board: core cycles per layer forward and
// backward, per loss and per optimizer step (nmcm/stage.h, StageProbe), from the DWT cycle counter
// (DWT CYCCNT, started by the port's init). Each piece is read with interrupts masked, so that
// SysTick's handler does not land in its figure. The same interface as the QEMU image's
// stopwatch (../node-qemu/stage_stopwatch.h): the calibration program (../calibrate-qemu/
// main_calibrate.cpp) is compiled against one or the other.
#pragma once

#include <cstdint>

#include "nmcm/stage.h"

namespace nmcm::app {

class StageStopwatch {
 public:
  static constexpr const char* kUnit = "cycles";  // what its figures count

  // Asked before each piece, outside the measured window: whether to time it.
  using Begin = bool (*)(void* context, StagePhase phase, std::uint32_t layer, std::uint32_t n);
  // Told after each timed piece, outside the window: its core cycles (the counter wraps after
  // 2^32 cycles, 15 s at 280 MHz: longer than any piece of the calibration suite).
  using End = void (*)(void* context, StagePhase phase, std::uint32_t layer, std::uint64_t cycles);

  // Installs the probe on `stage` (replacing any other). `context` is passed back to both.
  void attach(Stage& stage, Begin begin, End end, void* context);

 private:
  static void probe(void* self, StagePhase phase, std::uint32_t layer, std::uint32_t n, bool done);

  Begin begin_ = nullptr;
  End end_ = nullptr;
  void* context_ = nullptr;
  bool timing_ = false;
  std::uint32_t primask_ = 0;
  std::uint32_t start_ = 0;
};

}  // namespace nmcm::app
