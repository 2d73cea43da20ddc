#include "nmcm/net/transport.h"

namespace nmcm::net {

const char* io_status_name(IoStatus status) {
  switch (status) {
    case IoStatus::kOk:
      return "ok";
    case IoStatus::kTimeout:
      return "timeout";
    case IoStatus::kClosed:
      return "closed";
    case IoStatus::kRefused:
      return "refused";
    case IoStatus::kError:
      return "error";
  }
  return "?";
}

}  // namespace nmcm::net
