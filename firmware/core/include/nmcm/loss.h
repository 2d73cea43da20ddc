// Losses of the last stage (DESIGN.md "Loss"). Each returns the sum over the micro-batch of the
// per-sample loss and the number of samples whose arg-max is the label, and writes the gradient
// seed already scaled by `scale` = 1/B, B the whole batch (so micro-batches add up to the batch
// mean). Gradient pointers may be null when nothing upstream needs them. Labels must be in
// [0, classes): the caller checks.
#pragma once

#include <cstdint>

namespace nmcm {

enum class LossKind : uint8_t {
  kCrossEntropy = 0,
  kMse = 1,
};

struct LossResult {
  float loss_sum;    // Σ over samples of the per-sample loss; batch loss = Σ / B
  uint32_t correct;  // samples whose first arg-max equals the label
};

// PyTorch's cross_entropy on logits z[n, classes]: loss = logsumexp(z) - z[y];
// dz = (softmax(z) - onehot(y)) · scale.
LossResult cross_entropy_logits(float* dz, const float* z, const int32_t* labels, uint32_t n,
                                uint32_t classes, float scale);

// Cross-entropy on p = softmax(z) (the model ends in softmax), fused with that softmax:
// dz = (p - onehot(y)) · scale is the gradient with respect to the softmax's INPUT, so the
// softmax backward is skipped and no 1/p is ever formed. loss = -log p[y], with p[y] clamped to the
// smallest normal float: log never sees an underflowed 0, and below that (loss > 87.3) the
// reported value saturates while the gradient stays exact.
LossResult cross_entropy_probs(float* dz, const float* p, const int32_t* labels, uint32_t n,
                               uint32_t classes, float scale);

// mse_loss(out, one_hot(y)) with mean over B·classes elements: per-sample loss
// Σ_c (out - t)² / classes; dout = 2 (out - t) · scale / classes.
LossResult mse_onehot(float* dout, const float* out, const int32_t* labels, uint32_t n,
                      uint32_t classes, float scale);

}  // namespace nmcm
