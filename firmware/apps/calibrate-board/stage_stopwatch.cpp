#include "stage_stopwatch.h"

#include "nmcm/port/cortex_m.h"
#include "nmcm/port/port.h"

namespace nmcm::app {

namespace cm = port::cortex_m;

void StageStopwatch::attach(Stage& stage, Begin begin, End end, void* context) {
  begin_ = begin;
  end_ = end;
  context_ = context;
  timing_ = false;
  stage.set_probe(probe, this);
}

void StageStopwatch::probe(void* self, StagePhase phase, std::uint32_t layer, std::uint32_t n,
                           bool done) {
  auto* watch = static_cast<StageStopwatch*>(self);
  if (!done) {
    watch->timing_ = watch->begin_(watch->context_, phase, layer, n);
    if (!watch->timing_) return;
    watch->primask_ = cm::disable_interrupts();
    watch->start_ = port::cycles();  // the last thing before the work
    return;
  }
  if (!watch->timing_) return;
  const std::uint32_t cycles = port::cycles() - watch->start_;  // the first thing after it
  cm::restore_interrupts(watch->primask_);
  watch->timing_ = false;
  watch->end_(watch->context_, phase, layer, cycles);
}

}  // namespace nmcm::app
