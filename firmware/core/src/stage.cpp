#include "nmcm/stage.h"

#include <cstdint>

#include "nmcm/sgd.h"

namespace nmcm {

Status Stage::load(const uint8_t* blob, size_t len, uint8_t* arena, size_t arena_capacity,
                   const StageExpect* expect) {
  loaded_ = false;
  seeded_slot_plus_one_ = 0;
  if (arena == nullptr || reinterpret_cast<uintptr_t>(arena) % kArenaAlign != 0) {
    return error(StatusCode::kInvalidArgument, "arena is missing or not 16-byte aligned");
  }
  NMCM_RETURN_IF_ERROR(blob_check(blob, len, arena_capacity, expect, &layout_));
  arena_ = arena;
  for (uint32_t i = 0; i < layer_count(); ++i) {
    kernels_[i] = layer_kernel(static_cast<uint8_t>(layout_.layers[i].kind));
  }
  const bool momentum = (layout_.header.flags & kFlagMomentum) != 0;
  for (uint32_t t = 0; t < tensor_count(); ++t) {
    const uint32_t count = layout_.tensors[t].count;
    float* w = at(layout_.param[t]);
    float* g = at(layout_.grad[t]);
    for (uint32_t i = 0; i < count; ++i) {
      w[i] = blob_tensor_value(blob, layout_, t, i);
      g[i] = 0.0f;
    }
    if (momentum) {
      float* m = at(layout_.momentum[t]);
      for (uint32_t i = 0; i < count; ++i) m[i] = 0.0f;
    }
  }
  loaded_ = true;
  return ok_status();
}

// The arena is 16-byte aligned (checked in load) and so is every buffer offset (checked by
// blob_check), hence the casts through void* are aligned.
float* Stage::at(uint32_t offset) const {
  return offset == kNoBuffer ? nullptr : static_cast<float*>(static_cast<void*>(arena_ + offset));
}

uint32_t Stage::input_floats() const {
  return loaded_ ? static_cast<uint32_t>(layout_.layers[0].in.numel()) : 0;
}

uint32_t Stage::output_floats() const {
  return loaded_ ? static_cast<uint32_t>(layout_.layers[layer_count() - 1].out.numel()) : 0;
}

float* Stage::input(uint32_t slot) {
  return loaded_ && slot < slots() ? at(layout_.act[0][slot]) : nullptr;
}

const float* Stage::output(uint32_t slot) const {
  return loaded_ && slot < slots() ? at(layout_.act[layer_count()][slot]) : nullptr;
}

int32_t* Stage::labels(uint32_t slot) {
  if (!loaded_ || !is_last() || slot >= slots()) return nullptr;
  return static_cast<int32_t*>(static_cast<void*>(arena_ + layout_.labels[slot]));
}

float* Stage::grad_in() {
  return loaded_ && !is_last() ? at(layout_.act_grad[layer_count()]) : nullptr;
}

const float* Stage::grad_out() const {
  return loaded_ && !is_first() ? at(layout_.act_grad[0]) : nullptr;
}

LayerArgs Stage::args(uint32_t layer, uint32_t slot, uint32_t n) const {
  const LayerDesc& d = layout_.layers[layer];
  LayerArgs a{};
  a.n = n;
  a.in = at(layout_.act[layer][slot]);
  a.out = at(layout_.act[layer + 1][slot]);
  if (d.weight_tensor >= 0) {
    a.w = at(layout_.param[d.weight_tensor]);
    a.dw = at(layout_.grad[d.weight_tensor]);
  }
  if (d.bias_tensor >= 0) {
    a.b = at(layout_.param[d.bias_tensor]);
    a.db = at(layout_.grad[d.bias_tensor]);
  }
  a.dout = at(layout_.act_grad[layer + 1]);
  a.din = at(layout_.act_grad[layer]);
  return a;
}

Status Stage::check_call(uint32_t slot, uint32_t n) const {
  if (!loaded_) return error(StatusCode::kBadState, "no stage loaded");
  if (slot >= slots()) return error(StatusCode::kInvalidArgument, "slot out of range");
  if (n == 0 || n > micro_batch()) {
    return error(StatusCode::kInvalidArgument, "micro-batch size is 0 or above the planned one");
  }
  return ok_status();
}

Status Stage::forward(uint32_t slot, uint32_t n) {
  NMCM_RETURN_IF_ERROR(check_call(slot, n));
  for (uint32_t i = 0; i < layer_count(); ++i) {
    const LayerArgs a = args(i, slot, n);
    notify(StagePhase::kForward, i, n, false);
    kernels_[i]->forward(layout_.layers[i], a);
    notify(StagePhase::kForward, i, n, true);
  }
  return ok_status();
}

Status Stage::loss_backward_seed(uint32_t slot, uint32_t n, uint32_t batch_total, LossKind loss,
                                 LossResult* result) {
  NMCM_RETURN_IF_ERROR(check_call(slot, n));
  if (!is_last()) return error(StatusCode::kBadState, "only the last stage computes the loss");
  if (batch_total < n) return error(StatusCode::kInvalidArgument, "batch smaller than micro-batch");
  if (loss != LossKind::kCrossEntropy && loss != LossKind::kMse) {
    return error(StatusCode::kInvalidArgument, "unknown loss kind");
  }
  const uint32_t last = layer_count() - 1;
  if (layout_.layers[last].out.rank != 1) {
    return error(StatusCode::kBadState, "the loss needs a 1-D model output (flatten first)");
  }
  const uint32_t classes = output_floats();
  const int32_t* y = labels(slot);
  for (uint32_t s = 0; s < n; ++s) {
    if (y[s] < 0 || static_cast<uint32_t>(y[s]) >= classes) {
      return error(StatusCode::kInvalidArgument, "label outside [0, classes)");
    }
  }
  const float* out = output(slot);
  const float scale = 1.0f / static_cast<float>(batch_total);
  LossResult r{};
  notify(StagePhase::kLoss, 0, n, false);
  if (loss == LossKind::kCrossEntropy && layout_.layers[last].kind == LayerKind::kSoftmax) {
    // Fused with the softmax: the seed is the gradient of the softmax's input (loss.h).
    r = cross_entropy_probs(at(layout_.act_grad[last]), out, y, n, classes, scale);
    backward_from_ = static_cast<int32_t>(last) - 1;
  } else if (loss == LossKind::kCrossEntropy) {
    r = cross_entropy_logits(at(layout_.act_grad[last + 1]), out, y, n, classes, scale);
    backward_from_ = static_cast<int32_t>(last);
  } else {
    r = mse_onehot(at(layout_.act_grad[last + 1]), out, y, n, classes, scale);
    backward_from_ = static_cast<int32_t>(last);
  }
  notify(StagePhase::kLoss, 0, n, true);
  seeded_slot_plus_one_ = slot + 1;
  if (result) *result = r;
  return ok_status();
}

Status Stage::backward(uint32_t slot, uint32_t n) {
  NMCM_RETURN_IF_ERROR(check_call(slot, n));
  int32_t from = static_cast<int32_t>(layer_count()) - 1;
  if (is_last()) {
    if (seeded_slot_plus_one_ != slot + 1) {
      return error(StatusCode::kBadState, "backward on the last stage needs loss_backward_seed");
    }
    from = backward_from_;
    seeded_slot_plus_one_ = 0;
  }
  for (int32_t i = from; i >= 0; --i) {
    const LayerArgs a = args(static_cast<uint32_t>(i), slot, n);
    // No incoming gradient: only flattens at the start of the first stage, which need nothing.
    if (a.dout == nullptr) continue;
    notify(StagePhase::kBackward, static_cast<uint32_t>(i), n, false);
    kernels_[i]->backward(layout_.layers[i], a);
    notify(StagePhase::kBackward, static_cast<uint32_t>(i), n, true);
  }
  return ok_status();
}

void Stage::zero_grad() {
  if (!loaded_) return;
  for (uint32_t t = 0; t < tensor_count(); ++t) {
    float* g = at(layout_.grad[t]);
    for (uint32_t i = 0; i < layout_.tensors[t].count; ++i) g[i] = 0.0f;
  }
}

Status Stage::sgd_step(float lr, float momentum, float weight_decay) {
  if (!loaded_) return error(StatusCode::kBadState, "no stage loaded");
  const bool planned = (layout_.header.flags & kFlagMomentum) != 0;
  if (momentum != 0.0f && !planned) {
    return error(StatusCode::kInvalidArgument, "momentum needs a blob planned with momentum");
  }
  notify(StagePhase::kStep, 0, 0, false);
  for (uint32_t t = 0; t < tensor_count(); ++t) {
    sgd_update(at(layout_.param[t]), at(layout_.grad[t]),
               planned ? at(layout_.momentum[t]) : nullptr, layout_.tensors[t].count, lr, momentum,
               weight_decay);
  }
  notify(StagePhase::kStep, 0, 0, true);
  return ok_status();
}

TensorView Stage::weights(uint32_t t) {
  if (!loaded_ || t >= tensor_count()) return TensorView{nullptr, shape1(0)};
  return TensorView{at(layout_.param[t]), layout_.tensors[t].shape};
}

TensorView Stage::grads(uint32_t t) {
  if (!loaded_ || t >= tensor_count()) return TensorView{nullptr, shape1(0)};
  return TensorView{at(layout_.grad[t]), layout_.tensors[t].shape};
}

}  // namespace nmcm
