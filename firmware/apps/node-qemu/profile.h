// Instructions per layer, forward and backward, per training step (the `qemu` target's figures:
// deterministic under `-icount shift=0`). The stage's probe is the QEMU stopwatch
// (stage_stopwatch.h): it brackets every layer's forward and backward, the loss and the optimizer
// step, each timed by CMSDK timer 0 restarted at its start with interrupts masked, so that the
// same instructions give the same figure on every run, whatever happened before.
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
#include "stage_stopwatch.h"

namespace nmcm::app {

class StepProfile {
 public:
  // The node tells training from evaluation batches; the stage is probed until the end.
  void attach(Stage& stage, const runtime::Node& node);
  // Logs the figures of a step applied since the last call. Outside the node's poll(), so that
  // formatting the line is not charged to the node's compute counters.
  void flush();

 private:
  // The stopwatch's hooks (stage_stopwatch.h), on this profile.
  static bool begin(void* self, StagePhase phase, std::uint32_t layer, std::uint32_t n);
  static void end(void* self, StagePhase phase, std::uint32_t layer, std::uint64_t instructions);
  // Whether a piece is timed: inside a training batch only.
  bool starts(StagePhase phase, std::uint32_t layer, std::uint32_t n);
  // A timed piece's figure, added to the batch's.
  void add(StagePhase phase, std::uint32_t layer, std::uint64_t instructions);
  void reset(std::uint32_t batch);

  StageStopwatch stopwatch_;
  const runtime::Node* node_ = nullptr;
  std::uint32_t layers_ = 0;
  bool recording_ = false;  // inside a training batch
  std::uint32_t batch_ = 0;
  std::uint32_t samples_ = 0;
  std::uint64_t forward_[kMaxLayers] = {};
  std::uint64_t backward_[kMaxLayers] = {};
  std::uint64_t loss_ = 0;
  std::uint64_t step_ = 0;

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
