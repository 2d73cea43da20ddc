#include "nmcm/loss.h"

#include <cfloat>
#include <cmath>
#include <cstddef>

namespace nmcm {
namespace {

// First arg-max, as torch.argmax.
uint32_t argmax(const float* x, uint32_t n) {
  uint32_t best = 0;
  for (uint32_t i = 1; i < n; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return best;
}

}  // namespace

LossResult cross_entropy_logits(float* dz, const float* z, const int32_t* labels, uint32_t n,
                                uint32_t classes, float scale) {
  LossResult r{0.0f, 0};
  for (uint32_t s = 0; s < n; ++s) {
    const float* x = z + size_t{s} * classes;
    const uint32_t y = static_cast<uint32_t>(labels[s]);
    const uint32_t top = argmax(x, classes);
    const float max = x[top];
    float total = 0.0f;
    for (uint32_t i = 0; i < classes; ++i) total += std::exp(x[i] - max);
    // log-sum-exp around the maximum: no overflow, and log's argument is >= 1.
    r.loss_sum += std::log(total) - (x[y] - max);
    r.correct += top == y ? 1u : 0u;
    if (dz) {
      float* g = dz + size_t{s} * classes;
      const float inv = 1.0f / total;
      for (uint32_t i = 0; i < classes; ++i) g[i] = std::exp(x[i] - max) * inv * scale;
      g[y] -= scale;
    }
  }
  return r;
}

LossResult cross_entropy_probs(float* dz, const float* p, const int32_t* labels, uint32_t n,
                               uint32_t classes, float scale) {
  LossResult r{0.0f, 0};
  for (uint32_t s = 0; s < n; ++s) {
    const float* q = p + size_t{s} * classes;
    const uint32_t y = static_cast<uint32_t>(labels[s]);
    r.loss_sum -= std::log(q[y] > FLT_MIN ? q[y] : FLT_MIN);
    r.correct += argmax(q, classes) == y ? 1u : 0u;
    if (dz) {
      float* g = dz + size_t{s} * classes;
      for (uint32_t i = 0; i < classes; ++i) g[i] = q[i] * scale;
      g[y] -= scale;
    }
  }
  return r;
}

LossResult mse_onehot(float* dout, const float* out, const int32_t* labels, uint32_t n,
                      uint32_t classes, float scale) {
  LossResult r{0.0f, 0};
  const float inv_classes = 1.0f / static_cast<float>(classes);
  const float factor = 2.0f * scale * inv_classes;
  for (uint32_t s = 0; s < n; ++s) {
    const float* o = out + size_t{s} * classes;
    const uint32_t y = static_cast<uint32_t>(labels[s]);
    float sq = 0.0f;
    for (uint32_t i = 0; i < classes; ++i) {
      const float diff = o[i] - (i == y ? 1.0f : 0.0f);
      sq += diff * diff;
      if (dout) dout[size_t{s} * classes + i] = factor * diff;
    }
    r.loss_sum += sq * inv_classes;
    r.correct += argmax(o, classes) == y ? 1u : 0u;
  }
  return r;
}

}  // namespace nmcm
