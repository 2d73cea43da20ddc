// The stage blob loader: checks a blob as docs/blob-format.md ("Checks the loader makes") requires
// and decodes it into a StageLayout, the only form the executor uses. Nothing in the blob is
// trusted before the check that covers it, every read is bounds-checked against `len`, and every
// failure is a Status.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/config.h"
#include "nmcm/layer.h"
#include "nmcm/status.h"
#include "nmcm/tensor.h"

namespace nmcm {

constexpr uint16_t kBlobVersion = 1;
constexpr uint32_t kBlobHeaderSize = 64;
constexpr uint32_t kLayerRecordSize = 48;
constexpr uint32_t kTensorRecordSize = 32;
constexpr uint32_t kBufferRecordSize = 16;
constexpr uint32_t kBlobCrcSize = 4;
constexpr uint32_t kModelHashSize = 16;

constexpr uint16_t kFlagFirstStage = 1;
constexpr uint16_t kFlagLastStage = 2;
constexpr uint16_t kFlagMomentum = 4;

constexpr uint8_t kSharedSlot = 0xFF;  // a transient buffer, shared by all micro-batches
constexpr uint16_t kForever = 0xFFFF;  // last_use of a buffer that lives for the whole run
constexpr uint32_t kNoBuffer = 0xFFFFFFFF;

// Codes of the buffer table (docs/blob-format.md, "Buffer record").
enum class BufferKind : uint8_t {
  kParam = 1,
  kGrad = 2,
  kMomentum = 3,
  kAct = 4,
  kActGrad = 5,
  kLabels = 6,
};

struct BlobHeader {
  uint16_t version;
  uint32_t total_size;
  uint16_t stage_index, stage_count;
  uint16_t layer_count, tensor_count, buffer_count;
  uint16_t flags;
  uint16_t micro_batch;  // most samples in one micro-batch
  uint16_t slots;        // micro-batches in flight at once
  uint32_t arena_size;
  uint32_t layer_table, tensor_table, buffer_table, data;  // byte offsets
  uint8_t model_hash[kModelHashSize];
};

struct TensorDesc {
  uint32_t data_offset;  // relative to BlobHeader::data
  uint32_t count;
  uint16_t layer;  // position of the owning layer in the stage
  uint8_t role;    // 0 weight, 1 bias
  Shape shape;
};

struct BufferDesc {
  uint32_t offset, bytes;
  BufferKind kind;
  uint8_t slot;
  uint16_t index, first_use, last_use;
};

// What a node was built for; the loader refuses a blob of another model or stage.
struct StageExpect {
  uint8_t model_hash[kModelHashSize];
  uint16_t stage_index;
  uint16_t stage_count;
};

// A checked blob, decoded. Arena offsets come from the buffer table (the executor never plans);
// kNoBuffer where the stage has no such buffer.
struct StageLayout {
  BlobHeader header;
  LayerDesc layers[kMaxLayers];
  TensorDesc tensors[kMaxTensors];
  uint32_t param[kMaxTensors];
  uint32_t grad[kMaxTensors];
  uint32_t momentum[kMaxTensors];
  uint32_t act[kMaxLayers + 1][kMaxSlots];  // a_i: input of layer i; a_L: the stage output
  uint32_t act_grad[kMaxLayers + 1];        // gradient with respect to a_i
  uint32_t labels[kMaxSlots];
};

// Runs every check and fills `layout`. `arena_capacity` is the arena this node has; `expect` may be
// null (a host tool accepts any stage).
Status blob_check(const uint8_t* blob, size_t len, size_t arena_capacity, const StageExpect* expect,
                  StageLayout* layout);

// Record i of the buffer table of a blob that passed blob_check.
BufferDesc blob_buffer(const uint8_t* blob, const BlobHeader& header, uint32_t i);

// Float i of tensor t of a blob that passed blob_check (little-endian on any host).
float blob_tensor_value(const uint8_t* blob, const StageLayout& layout, uint32_t t, uint32_t i);

// Overwrite tensor t's data in a checked blob, then re-seal it with blob_seal: how trained
// weights go back into the same blob.
void blob_store_tensor(uint8_t* blob, const StageLayout& layout, uint32_t t, const float* data);

// Recompute the CRC of a blob of `len` bytes (len >= kBlobCrcSize).
void blob_seal(uint8_t* blob, size_t len);

}  // namespace nmcm
