#include "nmcm/sgd.h"

namespace nmcm {

void sgd_update(float* w, const float* g, float* buf, uint32_t count, float lr, float momentum,
                float weight_decay) {
  // The branches mirror torch's: with weight_decay == 0 or momentum == 0 the skipped terms are
  // not computed at all (so an inf weight or buffer cannot turn the update into NaN).
  const bool decay = weight_decay != 0.0f;
  if (momentum != 0.0f) {
    for (uint32_t i = 0; i < count; ++i) {
      const float d = decay ? g[i] + weight_decay * w[i] : g[i];
      buf[i] = momentum * buf[i] + d;
      w[i] -= lr * buf[i];
    }
  } else {
    for (uint32_t i = 0; i < count; ++i) {
      const float d = decay ? g[i] + weight_decay * w[i] : g[i];
      w[i] -= lr * d;
    }
  }
}

}  // namespace nmcm
