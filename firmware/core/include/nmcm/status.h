// Status: what library code returns instead of throwing or exiting. Messages are static strings
// (no formatting on target); `subject` and `index` say which record a message is about, e.g.
// subject "layer", index 3. Only main() decides what to do with a failure.
#pragma once

#include <cstdint>

namespace nmcm {

enum class StatusCode : uint8_t {
  kOk = 0,
  kInvalidArgument,     // a caller passed something out of range (slot, sample count, label)
  kTruncated,           // fewer bytes than the format needs
  kBadMagic,            // not the kind of file expected
  kUnsupportedVersion,  // a format version this build does not read
  kCorrupt,             // CRC mismatch
  kMalformed,           // a structural check failed (tables, shapes, ranges)
  kMismatch,            // a valid blob, but not the stage this node was built for
  kTooLarge,            // does not fit this node's fixed capacities or arena
  kBadState,            // call order violated (e.g. backward before a gradient arrived)
};

struct Status {
  StatusCode code;
  const char* message;
  const char* subject;  // "layer", "tensor", "buffer", or nullptr
  int32_t index;        // index of the subject, or -1

  constexpr bool ok() const { return code == StatusCode::kOk; }
};

constexpr Status ok_status() { return Status{StatusCode::kOk, "ok", nullptr, -1}; }

constexpr Status error(StatusCode code, const char* message) {
  return Status{code, message, nullptr, -1};
}

constexpr Status error_at(StatusCode code, const char* subject, int32_t index,
                          const char* message) {
  return Status{code, message, subject, index};
}

// Short stable name of a code, for logs: "malformed", "crc", ...
const char* status_code_name(StatusCode code);

}  // namespace nmcm

#define NMCM_RETURN_IF_ERROR(expr)         \
  do {                                     \
    const ::nmcm::Status nmcm_s_ = (expr); \
    if (!nmcm_s_.ok()) return nmcm_s_;     \
  } while (0)
