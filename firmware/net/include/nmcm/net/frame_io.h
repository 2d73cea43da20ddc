// Frames over a Transport: FrameSender writes header, fixed part, data (straight from the caller's
// memory, e.g. the arena) and CRC, numbering frames per connection; receive_frame() drives a
// FrameDecoder from a transport, asking a PayloadRouter where each data part goes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/net/decoder.h"
#include "nmcm/net/frame.h"
#include "nmcm/net/protocol.h"
#include "nmcm/net/transport.h"

namespace nmcm::net {

// Header fields a sender chooses (the type, sequence and length come from the call).
struct FrameMeta {
  uint16_t flags;
  uint32_t batch;
  uint16_t micro_batch;
};

constexpr FrameMeta kNoBatch = {0, 0, 0};

class FrameSender {
 public:
  explicit FrameSender(Transport* transport) : transport_(transport) {}

  // A new connection: number frames from 0 again.
  void reset() { next_sequence_ = 0; }

  // Sends one frame: payload = `fixed` (fixed_size bytes) then `data` (data_size bytes). The data
  // is sent without a copy. `timeout_ms` bounds each transport call (at most three per frame).
  // After a failure the stream is broken (part of a frame may have gone): close it.
  IoStatus send(MsgType type, const FrameMeta& meta, const uint8_t* fixed, uint32_t fixed_size,
                const void* data, uint32_t data_size, uint32_t timeout_ms);

  // ERROR with `reason` (NUL-terminated, cut to kMaxErrorText bytes).
  IoStatus send_error(ErrorCode code, uint32_t detail, const char* reason, const FrameMeta& meta,
                      uint32_t timeout_ms);

  uint32_t next_sequence() const { return next_sequence_; }
  uint64_t bytes_sent() const { return bytes_sent_; }
  uint32_t frames_sent() const { return frames_sent_; }

 private:
  Transport* transport_;
  uint32_t next_sequence_ = 0;
  uint64_t bytes_sent_ = 0;
  uint32_t frames_sent_ = 0;
};

// Where a data part goes: stored at `dst` (which holds `capacity` bytes), read and dropped (its
// CRC is still checked), or refused with `code`.
struct Route {
  enum class Action : uint8_t { kStore, kDiscard, kRefuse };
  Action action;
  void* dst;
  size_t capacity;
  ErrorCode code;
  uint32_t detail;

  static Route to(void* dst, size_t capacity) {
    return Route{Action::kStore, dst, capacity, ErrorCode::kNone, 0};
  }
  static Route discard() { return Route{Action::kDiscard, nullptr, 0, ErrorCode::kNone, 0}; }
  static Route refused(ErrorCode code, uint32_t detail = 0) {
    return Route{Action::kRefuse, nullptr, 0, code, detail};
  }
};

class PayloadRouter {
 public:
  // Called once the header and fixed part of a frame with a data part passed their checks:
  // decoder.header(), decoder.fixed() and decoder.data_size() say what is coming.
  virtual Route route(const FrameDecoder& decoder) = 0;

 protected:
  ~PayloadRouter() = default;
};

// The outcome of receive_frame():
//   frame arrived ............ io kOk,      error kNone  (decoder.header()/fixed() hold it)
//   nothing arrived .......... io kTimeout, error kNone  (decoder still at a frame start: poll on)
//   peer closed between frames io kClosed,  error kNone
//   refused by a check ....... io kOk,      error = the check's code
//   stalled inside a frame ... io kTimeout, error kTimeout
//   closed inside a frame .... io kClosed,  error kTruncated
//   transport failure ........ io kError,   error kNone
// On an error, send ERROR (if the transport still works) and close the connection.
struct ReceiveResult {
  IoStatus io;
  ErrorCode error;
  uint32_t detail;
  bool ok() const { return io == IoStatus::kOk && error == ErrorCode::kNone; }
};

// Reads one frame. Waits up to `first_byte_ms` for a frame to start (0: poll), then up to
// `inner_ms` for each further chunk of it. `router` may be null if no data part is acceptable
// (a data part is then refused with kUnexpected). `bytes_received`, if not null, is increased by
// every byte read.
ReceiveResult receive_frame(Transport* transport, FrameDecoder* decoder, PayloadRouter* router,
                            uint32_t first_byte_ms, uint32_t inner_ms,
                            uint64_t* bytes_received = nullptr);

}  // namespace nmcm::net
