// The stage executor: runs the layers of one stage for one micro-batch at a time, forward and
// backward, from the arena laid out by the blob's buffer table (docs/blob-format.md).
//
// Protocol for one micro-batch in slot s (slots are the stashed copies of the buffers backward
// needs, so up to slots() micro-batches can be between forward and backward at once):
//   write input(s) [first stage: samples; else the activations from upstream], forward(s, n);
//   last stage:  write labels(s), loss_backward_seed(s, n, B, loss), backward(s, n);
//   other stage: send output(s) downstream; when the gradient arrives write grad_in(), backward(s,
//   n); not first:   send grad_out() upstream (valid until the next backward).
// A seed (grad_in() or loss_backward_seed) and its backward come in pairs with no forward between.
// Gradients accumulate over the micro-batches of a batch: zero_grad(), all micro-batches,
// sgd_step().
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/blob.h"
#include "nmcm/layer.h"
#include "nmcm/loss.h"
#include "nmcm/status.h"
#include "nmcm/tensor.h"

namespace nmcm {

// What a Stage probe is told about (Stage::set_probe).
enum class StagePhase : uint8_t {
  kForward = 0,   // one layer's forward
  kBackward = 1,  // one layer's backward
  kLoss = 2,      // the loss and its gradient seed (last stage)
  kStep = 3,      // the optimizer step over every tensor
};

// Called right before (done = false) and right after (done = true) each piece of work: `layer` is
// the stage's layer index for kForward/kBackward (0 for kLoss/kStep), `n` the micro-batch's
// samples (0 for kStep). For profiling (the QEMU node counts instructions per layer): nothing else
// runs between the two calls, so a counter read in both measures exactly that piece.
using StageProbe = void (*)(void* context, StagePhase phase, uint32_t layer, uint32_t n, bool done);

class Stage {
 public:
  // Checks the blob (blob_check), then copies its weights into the arena's parameter buffers and
  // zeroes gradients and momentum. The blob is not used afterwards. `arena` must be 16-byte
  // aligned and hold `arena_capacity` bytes.
  Status load(const uint8_t* blob, size_t len, uint8_t* arena, size_t arena_capacity,
              const StageExpect* expect);

  bool loaded() const { return loaded_; }
  const StageLayout& layout() const { return layout_; }
  uint16_t stage_index() const { return layout_.header.stage_index; }
  uint16_t stage_count() const { return layout_.header.stage_count; }
  bool is_first() const { return layout_.header.stage_index == 0; }
  bool is_last() const { return layout_.header.stage_index + 1 == layout_.header.stage_count; }
  uint32_t micro_batch() const { return layout_.header.micro_batch; }
  uint32_t slots() const { return layout_.header.slots; }
  uint32_t layer_count() const { return layout_.header.layer_count; }
  uint32_t tensor_count() const { return layout_.header.tensor_count; }
  uint32_t input_floats() const;   // per sample
  uint32_t output_floats() const;  // per sample

  // [micro_batch, input_floats] / [micro_batch, output_floats] of a slot; null if out of range.
  float* input(uint32_t slot);
  const float* output(uint32_t slot) const;
  // Class ids of a slot's micro-batch; last stage only, else null.
  int32_t* labels(uint32_t slot);

  Status forward(uint32_t slot, uint32_t n);

  // Last stage: the loss of the micro-batch in `slot` and the gradient that starts its backward,
  // scaled by 1/batch_total. Cross-entropy after a final softmax is fused (see loss.h).
  Status loss_backward_seed(uint32_t slot, uint32_t n, uint32_t batch_total, LossKind loss,
                            LossResult* result);

  // Not the last stage: where the gradient from downstream lands, [micro_batch, output_floats].
  float* grad_in();

  Status backward(uint32_t slot, uint32_t n);

  // Not the first stage: the gradient for upstream after backward, [n, input_floats].
  const float* grad_out() const;

  void zero_grad();
  Status sgd_step(float lr, float momentum, float weight_decay);

  // Parameter tensor t in the arena (weights, to get or set them) and its gradient.
  TensorView weights(uint32_t t);
  TensorView grads(uint32_t t);

  // Installs a probe (nullptr removes it; none by default, and then each piece of work costs one
  // test of a pointer). `context` is passed back to it.
  void set_probe(StageProbe probe, void* context) {
    probe_ = probe;
    probe_context_ = context;
  }

 private:
  void notify(StagePhase phase, uint32_t layer, uint32_t n, bool done) const {
    if (probe_ != nullptr) probe_(probe_context_, phase, layer, n, done);
  }
  float* at(uint32_t offset) const;
  LayerArgs args(uint32_t layer, uint32_t slot, uint32_t n) const;
  Status check_call(uint32_t slot, uint32_t n) const;

  StageLayout layout_{};
  const LayerKernel* kernels_[kMaxLayers] = {};
  uint8_t* arena_ = nullptr;
  bool loaded_ = false;
  // Last stage: the slot whose gradient seed is waiting for backward, plus one (0: none), and the
  // layer backward starts from (the layer before a fused softmax). Every member starts at zero,
  // so a static Stage is all .bss: one with a non-zero initial value would put the whole object
  // (its layout tables) in .data, in flash as well as in SRAM.
  uint32_t seeded_slot_plus_one_ = 0;
  int32_t backward_from_ = 0;
  StageProbe probe_ = nullptr;
  void* probe_context_ = nullptr;
};

}  // namespace nmcm
