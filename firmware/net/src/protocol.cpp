#include "nmcm/net/protocol.h"

namespace nmcm::net {

bool type_info(uint8_t type, TypeInfo* out) {
  switch (static_cast<MsgType>(type)) {
    case MsgType::kHello:
    case MsgType::kHelloAck:
    case MsgType::kStatus:
      *out = TypeInfo{128, false};
      return true;
    case MsgType::kError:
      *out = TypeInfo{8, true};
      return true;
    case MsgType::kAck:
      *out = TypeInfo{8, false};
      return true;
    case MsgType::kShutdown:
    case MsgType::kStatusRequest:
      *out = TypeInfo{0, false};
      return true;
    case MsgType::kBatchBegin:
    case MsgType::kMetrics:
    case MsgType::kStep:
    case MsgType::kGetWeights:
      *out = TypeInfo{16, false};
      return true;
    case MsgType::kInputs:
    case MsgType::kActivations:
    case MsgType::kGradients:
      *out = TypeInfo{8, true};
      return true;
    case MsgType::kLabels:
      *out = TypeInfo{4, true};
      return true;
    case MsgType::kWeights:
    case MsgType::kSetWeights:
      *out = TypeInfo{16, true};
      return true;
  }
  return false;
}

const char* type_name(MsgType type) {
  switch (type) {
    case MsgType::kHello:
      return "HELLO";
    case MsgType::kHelloAck:
      return "HELLO_ACK";
    case MsgType::kError:
      return "ERROR";
    case MsgType::kAck:
      return "ACK";
    case MsgType::kShutdown:
      return "SHUTDOWN";
    case MsgType::kStatusRequest:
      return "STATUS_REQUEST";
    case MsgType::kStatus:
      return "STATUS";
    case MsgType::kBatchBegin:
      return "BATCH_BEGIN";
    case MsgType::kInputs:
      return "INPUTS";
    case MsgType::kLabels:
      return "LABELS";
    case MsgType::kActivations:
      return "ACTIVATIONS";
    case MsgType::kGradients:
      return "GRADIENTS";
    case MsgType::kMetrics:
      return "METRICS";
    case MsgType::kStep:
      return "STEP";
    case MsgType::kGetWeights:
      return "GET_WEIGHTS";
    case MsgType::kWeights:
      return "WEIGHTS";
    case MsgType::kSetWeights:
      return "SET_WEIGHTS";
  }
  return "?";
}

const char* error_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kNone:
      return "none";
    case ErrorCode::kBadMagic:
      return "bad_magic";
    case ErrorCode::kBadVersion:
      return "bad_version";
    case ErrorCode::kBadHeader:
      return "bad_header";
    case ErrorCode::kUnknownType:
      return "unknown_type";
    case ErrorCode::kTooLarge:
      return "too_large";
    case ErrorCode::kMalformed:
      return "malformed";
    case ErrorCode::kBadCrc:
      return "bad_crc";
    case ErrorCode::kSequence:
      return "sequence";
    case ErrorCode::kTruncated:
      return "truncated";
    case ErrorCode::kTimeout:
      return "timeout";
    case ErrorCode::kUnexpected:
      return "unexpected";
    case ErrorCode::kClusterMismatch:
      return "cluster_mismatch";
    case ErrorCode::kModelMismatch:
      return "model_mismatch";
    case ErrorCode::kStageMismatch:
      return "stage_mismatch";
    case ErrorCode::kBusy:
      return "busy";
    case ErrorCode::kInternal:
      return "internal";
    case ErrorCode::kNonFinite:
      return "non_finite";
  }
  return "?";
}

uint32_t payload_limit(uint32_t micro_batch, uint32_t input_features, uint32_t output_features,
                       bool last_stage) {
  // 64-bit so that no stage size can wrap the limit into something small.
  uint64_t limit = kMinPayloadLimit;
  const uint64_t input = 8 + uint64_t{micro_batch} * input_features * 4;
  const uint64_t other =
      last_stage ? 4 + uint64_t{micro_batch} * 4 : 8 + uint64_t{micro_batch} * output_features * 4;
  if (input > limit) limit = input;
  if (other > limit) limit = other;
  return limit > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(limit);
}

}  // namespace nmcm::net
