// The stopwatch of a Stage's pieces of work under QEMU: instructions per layer forward and
// backward, per loss and per optimizer step (nmcm/stage.h, StageProbe), deterministic under
// `-icount shift=0`. Each piece is timed by CMSDK timer 0, restarted as the last thing before it
// with interrupts masked and read as the first thing after it, so that the same instructions give
// the same figure on every run, whatever happened before: a counter that free-runs would give
// figures that depend on where within a 40-instruction tick the piece began, and an interrupt
// landing inside it would add its handler.
//
// The node's profile (profile.h) and the calibration image (../calibrate-qemu) both time through
// this one probe, so the few instructions of it that fall inside every figure are the same machine
// code in both, and the two report the same figure for the same piece of work.
#pragma once

#include <cstdint>

#include "nmcm/stage.h"

namespace nmcm::app {

class StageStopwatch {
 public:
  static constexpr const char* kUnit = "instructions";  // what its figures count

  // Asked before each piece, outside the measured window: whether to time it.
  using Begin = bool (*)(void* context, StagePhase phase, std::uint32_t layer, std::uint32_t n);
  // Told after each timed piece, outside the window: its instructions, a multiple of 40 (the
  // timer's resolution; a piece that does nothing reads 40, the probe's own instructions).
  using End = void (*)(void* context, StagePhase phase, std::uint32_t layer,
                       std::uint64_t instructions);

  // Installs the probe on `stage` (replacing any other). `context` is passed back to both.
  void attach(Stage& stage, Begin begin, End end, void* context);

 private:
  static void probe(void* self, StagePhase phase, std::uint32_t layer, std::uint32_t n, bool done);

  Begin begin_ = nullptr;
  End end_ = nullptr;
  void* context_ = nullptr;
  bool timing_ = false;
  std::uint32_t primask_ = 0;
};

}  // namespace nmcm::app
