#include "nmcm/status.h"

namespace nmcm {

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kOk:
      return "ok";
    case StatusCode::kInvalidArgument:
      return "invalid-argument";
    case StatusCode::kTruncated:
      return "truncated";
    case StatusCode::kBadMagic:
      return "bad-magic";
    case StatusCode::kUnsupportedVersion:
      return "unsupported-version";
    case StatusCode::kCorrupt:
      return "corrupt";
    case StatusCode::kMalformed:
      return "malformed";
    case StatusCode::kMismatch:
      return "mismatch";
    case StatusCode::kTooLarge:
      return "too-large";
    case StatusCode::kBadState:
      return "bad-state";
  }
  return "unknown";
}

}  // namespace nmcm
