#include "nmcm/net/payload.h"

#include <cstring>

#include "nmcm/net/wire.h"

namespace nmcm::net {
namespace {

void zero(uint8_t* out, uint32_t n) { std::memset(out, 0, n); }

bool known_role(uint8_t v) { return v >= 1 && v <= 4; }
bool known_kind(uint8_t v) { return v <= 2; }
bool known_state(uint8_t v) { return v <= 3; }
bool known_error(uint16_t v) { return v >= 1 && v <= kLastErrorCode; }
bool known_type(uint8_t v) {
  TypeInfo info{};
  return type_info(v, &info);
}

}  // namespace

// Offsets below are those of the tables in docs/protocol.md ("Payloads").

void encode(const Hello& x, uint8_t* out) {
  zero(out, Hello::kSize);
  out[0] = static_cast<uint8_t>(x.role);
  put_u16(out + 2, x.stage_index);
  put_u16(out + 4, x.stage_count);
  put_u16(out + 6, x.micro_batch);
  put_u32(out + 8, x.max_payload);
  put_u32(out + 12, x.input_features);
  put_u32(out + 16, x.output_features);
  put_u16(out + 20, x.slots);
  put_u16(out + 22, x.tensor_count);
  put_u32(out + 24, x.instance);
  std::memcpy(out + 32, x.model_hash, kHashSize);
  std::memcpy(out + 48, x.firmware_hash, kHashSize);
  // At most 63 characters, so that the field always ends with a NUL.
  for (uint32_t i = 0; i + 1 < kClusterFieldSize && x.cluster[i] != '\0'; ++i) {
    out[64 + i] = static_cast<uint8_t>(x.cluster[i]);
  }
}

bool decode(const uint8_t* in, Hello* x) {
  if (!known_role(in[0])) return false;
  x->role = static_cast<Role>(in[0]);
  x->stage_index = get_u16(in + 2);
  x->stage_count = get_u16(in + 4);
  x->micro_batch = get_u16(in + 6);
  x->max_payload = get_u32(in + 8);
  x->input_features = get_u32(in + 12);
  x->output_features = get_u32(in + 16);
  x->slots = get_u16(in + 20);
  x->tensor_count = get_u16(in + 22);
  x->instance = get_u32(in + 24);
  std::memcpy(x->model_hash, in + 32, kHashSize);
  std::memcpy(x->firmware_hash, in + 48, kHashSize);
  std::memcpy(x->cluster, in + 64, kClusterFieldSize);
  x->cluster[kClusterFieldSize - 1] = '\0';  // a peer that filled all 64 bytes is cut, not trusted
  return true;
}

void encode(const ErrorHead& x, uint8_t* out) {
  zero(out, ErrorHead::kSize);
  put_u16(out, static_cast<uint16_t>(x.code));
  put_u32(out + 4, x.detail);
}

bool decode(const uint8_t* in, ErrorHead* x) {
  const uint16_t code = get_u16(in);
  if (!known_error(code)) return false;
  x->code = static_cast<ErrorCode>(code);
  x->detail = get_u32(in + 4);
  return true;
}

void encode(const Ack& x, uint8_t* out) {
  zero(out, Ack::kSize);
  out[0] = static_cast<uint8_t>(x.acked_type);
  put_u32(out + 4, x.acked_sequence);
}

bool decode(const uint8_t* in, Ack* x) {
  if (!known_type(in[0])) return false;
  x->acked_type = static_cast<MsgType>(in[0]);
  x->acked_sequence = get_u32(in + 4);
  return true;
}

void encode(const StatusReport& x, uint8_t* out) {
  zero(out, StatusReport::kSize);
  put_u16(out + 0, x.stage_index);
  put_u16(out + 2, x.stage_count);
  out[4] = static_cast<uint8_t>(x.state);
  put_u32(out + 8, x.steps);
  put_u32(out + 12, x.batch);
  put_f32(out + 16, x.last_loss);
  put_u32(out + 20, x.arena_used);
  put_u32(out + 24, x.arena_capacity);
  put_u32(out + 28, x.tick_hz);
  put_u64(out + 32, x.compute_ticks);
  put_u64(out + 40, x.comm_ticks);
  put_u64(out + 48, x.idle_ticks);
  put_u64(out + 56, x.bytes_sent);
  put_u64(out + 64, x.bytes_received);
  put_u32(out + 72, x.frames_sent);
  put_u32(out + 76, x.frames_received);
  put_u32(out + 80, x.frames_rejected);
  put_u32(out + 84, x.uptime_ms);
  std::memcpy(out + 96, x.model_hash, kHashSize);
  std::memcpy(out + 112, x.firmware_hash, kHashSize);
}

bool decode(const uint8_t* in, StatusReport* x) {
  if (!known_state(in[4])) return false;
  x->stage_index = get_u16(in + 0);
  x->stage_count = get_u16(in + 2);
  x->state = static_cast<NodeState>(in[4]);
  x->steps = get_u32(in + 8);
  x->batch = get_u32(in + 12);
  x->last_loss = get_f32(in + 16);
  x->arena_used = get_u32(in + 20);
  x->arena_capacity = get_u32(in + 24);
  x->tick_hz = get_u32(in + 28);
  x->compute_ticks = get_u64(in + 32);
  x->comm_ticks = get_u64(in + 40);
  x->idle_ticks = get_u64(in + 48);
  x->bytes_sent = get_u64(in + 56);
  x->bytes_received = get_u64(in + 64);
  x->frames_sent = get_u32(in + 72);
  x->frames_received = get_u32(in + 76);
  x->frames_rejected = get_u32(in + 80);
  x->uptime_ms = get_u32(in + 84);
  std::memcpy(x->model_hash, in + 96, kHashSize);
  std::memcpy(x->firmware_hash, in + 112, kHashSize);
  return true;
}

void encode(const BatchBegin& x, uint8_t* out) {
  zero(out, BatchBegin::kSize);
  put_u16(out + 0, x.batch_size);
  put_u16(out + 2, x.micro_batches);
  out[4] = static_cast<uint8_t>(x.mode);
  out[5] = static_cast<uint8_t>(x.loss);
  put_u32(out + 8, x.epoch);
}

bool decode(const uint8_t* in, BatchBegin* x) {
  if (in[4] > 1 || in[5] > 1) return false;
  x->batch_size = get_u16(in + 0);
  x->micro_batches = get_u16(in + 2);
  x->mode = static_cast<Mode>(in[4]);
  x->loss = static_cast<LossCode>(in[5]);
  x->epoch = get_u32(in + 8);
  return true;
}

void encode(const TensorHead& x, uint8_t* out) {
  zero(out, TensorHead::kSize);
  put_u16(out + 0, x.samples);
  put_u32(out + 4, x.features);
}

bool decode(const uint8_t* in, TensorHead* x) {
  x->samples = get_u16(in + 0);
  x->features = get_u32(in + 4);
  return x->samples >= 1 && x->features >= 1;
}

void encode(const LabelsHead& x, uint8_t* out) {
  zero(out, LabelsHead::kSize);
  put_u16(out, x.samples);
}

bool decode(const uint8_t* in, LabelsHead* x) {
  x->samples = get_u16(in);
  return x->samples >= 1;
}

void encode(const Metrics& x, uint8_t* out) {
  zero(out, Metrics::kSize);
  put_f32(out + 0, x.loss_sum);
  put_u32(out + 4, x.correct);
  put_u32(out + 8, x.samples);
}

bool decode(const uint8_t* in, Metrics* x) {
  x->loss_sum = get_f32(in + 0);
  x->correct = get_u32(in + 4);
  x->samples = get_u32(in + 8);
  return true;
}

void encode(const Step& x, uint8_t* out) {
  zero(out, Step::kSize);
  put_f32(out + 0, x.lr);
  put_f32(out + 4, x.momentum);
  put_f32(out + 8, x.weight_decay);
}

bool decode(const uint8_t* in, Step* x) {
  x->lr = get_f32(in + 0);
  x->momentum = get_f32(in + 4);
  x->weight_decay = get_f32(in + 8);
  return true;
}

void encode(const GetWeights& x, uint8_t* out) {
  zero(out, GetWeights::kSize);
  put_u16(out + 0, x.tensor);
  out[2] = static_cast<uint8_t>(x.kind);
  put_u32(out + 4, x.offset);
  put_u32(out + 8, x.count);
}

bool decode(const uint8_t* in, GetWeights* x) {
  if (!known_kind(in[2])) return false;
  x->tensor = get_u16(in + 0);
  x->kind = static_cast<TensorKind>(in[2]);
  x->offset = get_u32(in + 4);
  x->count = get_u32(in + 8);
  return x->count >= 1;
}

void encode(const WeightsHead& x, uint8_t* out) {
  zero(out, WeightsHead::kSize);
  put_u16(out + 0, x.tensor);
  out[2] = static_cast<uint8_t>(x.kind);
  put_u32(out + 4, x.offset);
  put_u32(out + 8, x.count);
  put_u32(out + 12, x.total);
}

bool decode(const uint8_t* in, WeightsHead* x) {
  if (!known_kind(in[2])) return false;
  x->tensor = get_u16(in + 0);
  x->kind = static_cast<TensorKind>(in[2]);
  x->offset = get_u32(in + 4);
  x->count = get_u32(in + 8);
  x->total = get_u32(in + 12);
  return x->count >= 1 && uint64_t{x->offset} + x->count <= x->total;
}

namespace {

template <typename T>
ErrorCode check_decodes(const uint8_t* fixed) {
  T x{};
  return decode(fixed, &x) ? ErrorCode::kNone : ErrorCode::kMalformed;
}

}  // namespace

ErrorCode check_fixed(MsgType type, const uint8_t* fixed, uint32_t data_size) {
  switch (type) {
    case MsgType::kHello:
    case MsgType::kHelloAck:
      return check_decodes<Hello>(fixed);
    case MsgType::kError: {
      ErrorHead x{};
      return decode(fixed, &x) && data_size <= kMaxErrorText ? ErrorCode::kNone
                                                             : ErrorCode::kMalformed;
    }
    case MsgType::kAck:
      return check_decodes<Ack>(fixed);
    case MsgType::kShutdown:
    case MsgType::kStatusRequest:
      return ErrorCode::kNone;
    case MsgType::kStatus:
      return check_decodes<StatusReport>(fixed);
    case MsgType::kBatchBegin:
      return check_decodes<BatchBegin>(fixed);
    case MsgType::kInputs:
    case MsgType::kActivations:
    case MsgType::kGradients: {
      TensorHead x{};
      return decode(fixed, &x) && x.data_bytes() == data_size ? ErrorCode::kNone
                                                              : ErrorCode::kMalformed;
    }
    case MsgType::kLabels: {
      LabelsHead x{};
      return decode(fixed, &x) && uint64_t{x.samples} * 4 == data_size ? ErrorCode::kNone
                                                                       : ErrorCode::kMalformed;
    }
    case MsgType::kMetrics:
      return check_decodes<Metrics>(fixed);
    case MsgType::kStep:
      return check_decodes<Step>(fixed);
    case MsgType::kGetWeights:
      return check_decodes<GetWeights>(fixed);
    case MsgType::kWeights:
    case MsgType::kSetWeights: {
      WeightsHead x{};
      return decode(fixed, &x) && uint64_t{x.count} * 4 == data_size ? ErrorCode::kNone
                                                                     : ErrorCode::kMalformed;
    }
  }
  return ErrorCode::kMalformed;
}

}  // namespace nmcm::net
