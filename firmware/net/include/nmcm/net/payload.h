// Fixed parts of every message type (docs/protocol.md, "Payloads"): one struct each, with
// encode(x, out) writing its kSize bytes and decode(in, &x) reading them, false when a field is
// out of range. Data parts (tensors, class ids, reason text) are not copied through these: they go
// between the wire and their destination directly (decoder.h, frame_io.h).
//
// check_fixed() is the decoder's check 9: a fixed part that passes it always decodes.
#pragma once

#include <cstdint>

#include "nmcm/net/protocol.h"

namespace nmcm::net {

// HELLO and HELLO_ACK: the sender's identity.
struct Hello {
  static constexpr uint32_t kSize = 128;
  Role role;
  uint16_t stage_index;
  uint16_t stage_count;
  uint16_t micro_batch;
  uint32_t max_payload;
  uint32_t input_features;
  uint32_t output_features;
  uint16_t slots;
  uint16_t tensor_count;
  uint8_t model_hash[kHashSize];
  uint8_t firmware_hash[kHashSize];
  char cluster[kClusterFieldSize];  // NUL-terminated: at most 63 characters go on the wire
  // A node: the number it was started with (`nmcm apply` gives each sim or QEMU node a fresh one,
  // and so knows that the process answering on a port is the one it started); else 0.
  uint32_t instance = 0;
};

// ERROR; the reason text (0..kMaxErrorText bytes of UTF-8) is its data part.
struct ErrorHead {
  static constexpr uint32_t kSize = 8;
  ErrorCode code;
  uint32_t detail;
};

struct Ack {
  static constexpr uint32_t kSize = 8;
  MsgType acked_type;
  uint32_t acked_sequence;
};

struct StatusReport {
  static constexpr uint32_t kSize = 128;
  uint16_t stage_index;
  uint16_t stage_count;
  NodeState state;
  uint32_t steps;
  uint32_t batch;
  float last_loss;
  uint32_t arena_used;
  uint32_t arena_capacity;
  uint32_t tick_hz;
  uint64_t compute_ticks;
  uint64_t comm_ticks;
  uint64_t idle_ticks;
  uint64_t bytes_sent;
  uint64_t bytes_received;
  uint32_t frames_sent;
  uint32_t frames_received;
  uint32_t frames_rejected;
  uint32_t uptime_ms;
  uint8_t model_hash[kHashSize];
  uint8_t firmware_hash[kHashSize];
};

struct BatchBegin {
  static constexpr uint32_t kSize = 16;
  uint16_t batch_size;
  uint16_t micro_batches;
  Mode mode;
  LossCode loss;
  uint32_t epoch;
};

// INPUTS, ACTIVATIONS, GRADIENTS; float32 [samples, features] follows.
struct TensorHead {
  static constexpr uint32_t kSize = 8;
  uint16_t samples;
  uint32_t features;
  uint64_t data_bytes() const { return uint64_t{samples} * features * 4u; }
};

// LABELS; int32 [samples] follows.
struct LabelsHead {
  static constexpr uint32_t kSize = 4;
  uint16_t samples;
};

struct Metrics {
  static constexpr uint32_t kSize = 16;
  float loss_sum;
  uint32_t correct;
  uint32_t samples;
};

struct Step {
  static constexpr uint32_t kSize = 16;
  float lr;
  float momentum;
  float weight_decay;
};

struct GetWeights {
  static constexpr uint32_t kSize = 16;
  uint16_t tensor;
  TensorKind kind;
  uint32_t offset;
  uint32_t count;
};

// WEIGHTS and SET_WEIGHTS; float32 [count] follows.
struct WeightsHead {
  static constexpr uint32_t kSize = 16;
  uint16_t tensor;
  TensorKind kind;
  uint32_t offset;
  uint32_t count;
  uint32_t total;
};

void encode(const Hello& x, uint8_t* out);
void encode(const ErrorHead& x, uint8_t* out);
void encode(const Ack& x, uint8_t* out);
void encode(const StatusReport& x, uint8_t* out);
void encode(const BatchBegin& x, uint8_t* out);
void encode(const TensorHead& x, uint8_t* out);
void encode(const LabelsHead& x, uint8_t* out);
void encode(const Metrics& x, uint8_t* out);
void encode(const Step& x, uint8_t* out);
void encode(const GetWeights& x, uint8_t* out);
void encode(const WeightsHead& x, uint8_t* out);

bool decode(const uint8_t* in, Hello* x);
bool decode(const uint8_t* in, ErrorHead* x);
bool decode(const uint8_t* in, Ack* x);
bool decode(const uint8_t* in, StatusReport* x);
bool decode(const uint8_t* in, BatchBegin* x);
bool decode(const uint8_t* in, TensorHead* x);
bool decode(const uint8_t* in, LabelsHead* x);
bool decode(const uint8_t* in, Metrics* x);
bool decode(const uint8_t* in, Step* x);
bool decode(const uint8_t* in, GetWeights* x);
bool decode(const uint8_t* in, WeightsHead* x);

// Check 9 of docs/protocol.md: the fixed part of a frame of `type` (TypeInfo::fixed_size bytes)
// is consistent with the `data_size` bytes that follow it and its enumerations are in range.
// Returns kNone or kMalformed.
ErrorCode check_fixed(MsgType type, const uint8_t* fixed, uint32_t data_size);

}  // namespace nmcm::net
