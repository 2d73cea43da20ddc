#include "profile.h"

#include <cstddef>

#include "nmcm/port/line.h"
#include "nmcm/port/port.h"

namespace nmcm::app {

void StepProfile::attach(Stage& stage, const runtime::Node& node) {
  node_ = &node;
  layers_ = stage.layer_count();
  stopwatch_.attach(stage, begin, end, this);
}

bool StepProfile::begin(void* self, StagePhase phase, std::uint32_t layer, std::uint32_t n) {
  return static_cast<StepProfile*>(self)->starts(phase, layer, n);
}

void StepProfile::end(void* self, StagePhase phase, std::uint32_t layer,
                      std::uint64_t instructions) {
  static_cast<StepProfile*>(self)->add(phase, layer, instructions);
}

bool StepProfile::starts(StagePhase phase, std::uint32_t layer, std::uint32_t n) {
  if (phase == StagePhase::kForward && layer == 0) {
    // A micro-batch starts its forward: in a training batch or not, and which one.
    const net::StatusReport status = node_->status();
    recording_ = status.state == net::NodeState::kTraining;
    if (recording_ && status.batch != batch_) reset(status.batch);
    if (recording_) samples_ += n;
  }
  return recording_;
}

void StepProfile::add(StagePhase phase, std::uint32_t layer, std::uint64_t instructions) {
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
