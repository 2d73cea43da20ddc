// Constants and enumerations of the wire protocol, version 1 (docs/protocol.md). The numbers are
// the format: a change here is a new protocol version, new test vectors (tests/vectors/protocol/)
// and the same change in nmcm_deploy/protocol/spec.py.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nmcm::net {

constexpr uint8_t kMagic[4] = {'N', 'M', 'C', 'P'};
constexpr uint8_t kVersion = 1;
constexpr uint32_t kHeaderFieldsSize = 24;  // the header CRC covers these
constexpr uint32_t kHeaderSize = 28;
constexpr uint32_t kCrcSize = 4;
constexpr uint32_t kMinPayloadLimit = 512;  // every receiver takes this: fixed parts and ERROR fit
constexpr uint32_t kMaxFixedSize = 128;     // largest fixed part (HELLO, STATUS)
constexpr uint32_t kMaxErrorText = 200;
constexpr uint32_t kHashSize = 16;
constexpr uint32_t kClusterFieldSize = 64;  // char[64], NUL-padded
constexpr uint16_t kObserverStage = 0xFFFF;

constexpr uint16_t kFlagEval = 1;  // the frame belongs to a forward-only evaluation batch
constexpr uint16_t kKnownFlags = kFlagEval;

enum class MsgType : uint8_t {
  kHello = 0x01,
  kHelloAck = 0x02,
  kError = 0x03,
  kAck = 0x04,
  kShutdown = 0x05,
  kStatusRequest = 0x06,
  kStatus = 0x07,
  kBatchBegin = 0x10,
  kInputs = 0x11,
  kLabels = 0x12,
  kActivations = 0x13,
  kGradients = 0x14,
  kMetrics = 0x15,
  kStep = 0x16,
  kGetWeights = 0x20,
  kWeights = 0x21,
  kSetWeights = 0x22,
};

// ERROR codes, and the outcome of every check a receiver makes. kNone is "no error".
enum class ErrorCode : uint16_t {
  kNone = 0,
  kBadMagic = 1,
  kBadVersion = 2,
  kBadHeader = 3,
  kUnknownType = 4,
  kTooLarge = 5,
  kMalformed = 6,
  kBadCrc = 7,
  kSequence = 8,
  kTruncated = 9,
  kTimeout = 10,
  kUnexpected = 11,
  kClusterMismatch = 12,
  kModelMismatch = 13,
  kStageMismatch = 14,
  kBusy = 15,
  kInternal = 16,
  kNonFinite = 17,
};
constexpr uint16_t kLastErrorCode = 17;

enum class Role : uint8_t {
  kCoordinator = 1,
  kUpstream = 2,  // the upstream neighbour stage, on the connection it opened
  kNode = 3,      // a node answering in HELLO_ACK
  kObserver = 4,  // a status probe: STATUS_REQUEST and SHUTDOWN only
};

enum class Mode : uint8_t { kTrain = 0, kEval = 1 };

// The values of nmcm::LossKind (firmware/core/include/nmcm/loss.h).
enum class LossCode : uint8_t { kCrossEntropy = 0, kMse = 1 };

enum class TensorKind : uint8_t { kParameter = 0, kMomentum = 1, kGradient = 2 };

enum class NodeState : uint8_t { kIdle = 0, kTraining = 1, kEvaluating = 2, kFailed = 3 };

struct TypeInfo {
  uint32_t fixed_size;  // bytes of the type's fixed part
  bool has_data;        // whether a data part may follow it
};

// False for a type this version does not know.
bool type_info(uint8_t type, TypeInfo* out);

// "HELLO", "INPUTS", ...; "?" for an unknown value.
const char* type_name(MsgType type);

// Short stable name, as in the test vectors: "bad_magic", "too_large", ...; "none" for kNone.
const char* error_name(ErrorCode code);

// A node's receive limit: the biggest frame its stage takes (docs/protocol.md, "The receive
// limit"), never below kMinPayloadLimit; saturates at UINT32_MAX.
uint32_t payload_limit(uint32_t micro_batch, uint32_t input_features, uint32_t output_features,
                       bool last_stage);

}  // namespace nmcm::net
