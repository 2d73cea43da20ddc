// Instructions per layer, forward and backward, per training step (the `qemu` target's figures:
// deterministic under `-icount shift=0`). A Stage probe (nmcm/stage.h) brackets every layer's
// forward and backward, the loss and the optimizer step; each piece is timed by CMSDK timer 0,
// restarted at its start with interrupts masked, so that the same instructions give the same
// figure on every run, whatever happened before (a counter that free-runs would give figures that
// depend on where within a 40-instruction tick the piece began, and an interrupt landing inside
// it would add its handler).
//
// The figures of one training batch add up over its micro-batches; when the step is applied, one
// line goes to the log, which the runner on the host reads (nmcm_deploy/targets/qemu.py):
//
//   profile batch=3 samples=16 forward=9880,3240,... backward=20920,...,0 loss=1400 step=6200
//
// one figure per layer of the stage, in instructions (multiples of 40: the timer's resolution);
// a layer without backward work (a softmax fused into the loss, a flatten at the start of the
// model) has 0. Evaluation batches are not counted.
#pragma once

#include <cstdint>

#include "nmcm/config.h"
#include "nmcm/runtime/node.h"
#include "nmcm/stage.h"

namespace nmcm::app {

class StepProfile {
 public:
  // The node tells training from evaluation batches; the stage is probed until the end.
  void attach(Stage& stage, const runtime::Node& node);
  // Logs the figures of a step applied since the last call. Outside the node's poll(), so that
  // formatting the line is not charged to the node's compute counters.
  void flush();

 private:
  static void probe(void* self, StagePhase phase, std::uint32_t layer, std::uint32_t n, bool done);
  void begin(StagePhase phase, std::uint32_t layer, std::uint32_t n);
  void end(StagePhase phase, std::uint32_t layer);
  void reset(std::uint32_t batch);

  const runtime::Node* node_ = nullptr;
  std::uint32_t layers_ = 0;
  bool recording_ = false;  // inside a training batch
  std::uint32_t batch_ = 0;
  std::uint32_t samples_ = 0;
  std::uint64_t forward_[kMaxLayers] = {};
  std::uint64_t backward_[kMaxLayers] = {};
  std::uint64_t loss_ = 0;
  std::uint64_t step_ = 0;
  std::uint32_t primask_ = 0;

  // The last step applied, waiting for flush().
  bool ready_ = false;
  std::uint32_t ready_batch_ = 0;
  std::uint32_t ready_samples_ = 0;
  std::uint64_t ready_forward_[kMaxLayers] = {};
  std::uint64_t ready_backward_[kMaxLayers] = {};
  std::uint64_t ready_loss_ = 0;
  std::uint64_t ready_step_ = 0;
};

}  // namespace nmcm::app
