#include "profile.h"

#include <cstddef>

#include "nmcm/port/cortex_m.h"
#include "nmcm/port/line.h"
#include "nmcm/port/port.h"
#include "nmcm/port/qemu_mps2.h"

namespace nmcm::app {

namespace qemu = port::qemu;
namespace cm = port::cortex_m;

// Timer 0 is the stopwatch; timer 1 counts the node's instructions (qemu_clock.cpp).
constexpr unsigned kStopwatch = 0;

void StepProfile::attach(Stage& stage, const runtime::Node& node) {
  node_ = &node;
  layers_ = stage.layer_count();
  stage.set_probe(probe, this);
}

void StepProfile::probe(void* self, StagePhase phase, std::uint32_t layer, std::uint32_t n,
                        bool done) {
  auto* profile = static_cast<StepProfile*>(self);
  if (done) {
    profile->end(phase, layer);
  } else {
    profile->begin(phase, layer, n);
  }
}

void StepProfile::begin(StagePhase phase, std::uint32_t layer, std::uint32_t n) {
  if (phase == StagePhase::kForward && layer == 0) {
    // A micro-batch starts its forward: in a training batch or not, and which one.
    const net::StatusReport status = node_->status();
    recording_ = status.state == net::NodeState::kTraining;
    if (recording_ && status.batch != batch_) reset(status.batch);
    if (recording_) samples_ += n;
  }
  if (!recording_) return;
  primask_ = cm::disable_interrupts();
  qemu::restart_timer(kStopwatch);  // the last thing before the work
}

void StepProfile::end(StagePhase phase, std::uint32_t layer) {
  if (!recording_) return;
  const std::uint32_t ticks = qemu::timer_ticks(kStopwatch);  // the first thing after it
  cm::restore_interrupts(primask_);
  const std::uint64_t instructions = std::uint64_t{ticks} * qemu::kNanosecondsPerTick;
  switch (phase) {
    case StagePhase::kForward:
      forward_[layer] += instructions;
      break;
    case StagePhase::kBackward:
      backward_[layer] += instructions;
      break;
    case StagePhase::kLoss:
      loss_ += instructions;
      break;
    case StagePhase::kStep:
      step_ += instructions;
      // The step closes the batch: its figures are complete.
      ready_ = true;
      ready_batch_ = batch_;
      ready_samples_ = samples_;
      for (std::uint32_t i = 0; i < layers_; ++i) {
        ready_forward_[i] = forward_[i];
        ready_backward_[i] = backward_[i];
      }
      ready_loss_ = loss_;
      ready_step_ = step_;
      recording_ = false;
      reset(0);
      break;
  }
}

void StepProfile::reset(std::uint32_t batch) {
  batch_ = batch;
  samples_ = 0;
  for (std::uint32_t i = 0; i < layers_; ++i) forward_[i] = backward_[i] = 0;
  loss_ = step_ = 0;
}

void StepProfile::flush() {
  if (!ready_) return;
  ready_ = false;
  // 32 layers x 2 x up to 11 characters, and the rest.
  port::Line<800> line;
  line.text("profile batch=").dec(ready_batch_).text(" samples=").dec(ready_samples_);
  line.text(" forward=");
  for (std::uint32_t i = 0; i < layers_; ++i) line.text(i ? "," : "").dec(ready_forward_[i]);
  line.text(" backward=");
  for (std::uint32_t i = 0; i < layers_; ++i) line.text(i ? "," : "").dec(ready_backward_[i]);
  line.text(" loss=").dec(ready_loss_).text(" step=").dec(ready_step_);
  port::log(line.c_str());
}

}  // namespace nmcm::app
