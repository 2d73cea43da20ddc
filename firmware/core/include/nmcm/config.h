// Fixed capacities of the executor. A node build may lower them (-DNMCM_MAX_LAYERS=...) to save
// RAM; the blob loader refuses any blob that needs more (docs/blob-format.md, "Checks").
#pragma once

#include <cstdint>

#ifndef NMCM_MAX_LAYERS
#define NMCM_MAX_LAYERS 32
#endif
#ifndef NMCM_MAX_TENSORS
#define NMCM_MAX_TENSORS 64
#endif
#ifndef NMCM_MAX_SLOTS
#define NMCM_MAX_SLOTS 8
#endif
#ifndef NMCM_MAX_BUFFERS
#define NMCM_MAX_BUFFERS 512
#endif

namespace nmcm {

constexpr uint32_t kMaxLayers = NMCM_MAX_LAYERS;
constexpr uint32_t kMaxTensors = NMCM_MAX_TENSORS;
constexpr uint32_t kMaxSlots = NMCM_MAX_SLOTS;
constexpr uint32_t kMaxBuffers = NMCM_MAX_BUFFERS;

// The arena and every buffer in it are aligned to this many bytes (docs/blob-format.md).
constexpr uint32_t kArenaAlign = 16;

}  // namespace nmcm
