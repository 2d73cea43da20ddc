// The byte stream a connection runs on: POSIX TCP (host, `sim`), a W5500 socket (boards) or a UART
// (QEMU). The protocol code sees only this interface. Every call waits at most `timeout_ms`
// (0: do not wait, just poll); none blocks forever.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nmcm::net {

enum class IoStatus : uint8_t {
  kOk = 0,
  kTimeout,  // nothing moved within the timeout (send: not every byte was taken)
  kClosed,   // the peer closed the stream (or it was never open)
  kRefused,  // connect: nobody listens there (yet)
  kError,    // anything else: reset, socket or chip failure
};

// "ok", "timeout", ...
const char* io_status_name(IoStatus status);

struct IoResult {
  IoStatus status;
  size_t bytes;  // bytes moved (recv_some: >= 1 when kOk)
};

class Transport {
 public:
  // Sends all `len` bytes, or fails: kTimeout if the peer did not take them within timeout_ms.
  virtual IoStatus send_all(const void* data, size_t len, uint32_t timeout_ms) = 0;
  // Receives between 1 and `capacity` bytes: waits up to timeout_ms for the first.
  virtual IoResult recv_some(void* data, size_t capacity, uint32_t timeout_ms) = 0;
  // Closes the stream; further calls return kClosed. Safe to call twice.
  virtual void close() = 0;

 protected:
  // Not deleted through this interface: transports live in static storage on the boards.
  ~Transport() = default;
};

}  // namespace nmcm::net
