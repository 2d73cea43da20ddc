// Incremental frame decoder: a state machine fed with the bytes of one direction of one
// connection. It makes the checks of docs/protocol.md in order, each as soon as its bytes are in:
//
//   header (28 bytes, own buffer) -> checks 1-8 -> fixed part (own buffer) -> check 9
//   -> kPayload: the caller chooses the destination of the data part (check 10: it must hold it)
//   -> data part, written straight into that destination -> frame CRC (check 11) -> kFrame
//
// So no byte reaches the caller's memory before the header and the fixed part have been checked,
// and the data is not to be used before kFrame: on kError after kPayload the destination holds
// unchecked bytes that the caller must treat as garbage (docs/protocol.md, "Never touching the
// arena with unchecked bytes"). After kError the decoder stays in error until reset(); the
// connection is to be closed.
//
// Two ways to drive it:
//   pull (no copy): ByteSpan s = want(); n = transport.recv_some(s.data, s.size); commit(n);
//   push (a byte stream already in memory): feed(data, len, &used).
// Each returns the next event; on kPayload, call accept_payload() (or skip_payload() / refuse())
// before reading on.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/net/frame.h"
#include "nmcm/net/protocol.h"

namespace nmcm::net {

enum class DecodeEvent : uint8_t {
  kNeedMore,  // give it more bytes
  kPayload,   // header and fixed part checked; a data part follows: choose its destination
  kFrame,     // a whole frame arrived and its CRC matched: header(), fixed() and the data are valid
  kError,     // refused: error(), error_detail()
};

struct ByteSpan {
  uint8_t* data;
  size_t size;
};

class FrameDecoder {
 public:
  // `max_payload`: this side's receive limit. `check_sequence`: frames must be numbered 0, 1, ...
  explicit FrameDecoder(uint32_t max_payload, bool check_sequence = true);

  // A new connection: expect sequence 0, forget any partial frame or error.
  void reset();
  void set_max_payload(uint32_t max_payload) { max_payload_ = max_payload; }

  // Where the next bytes go, and at most how many; {nullptr, 0} while an event must be handled
  // (kPayload pending) or after kError.
  ByteSpan want();
  // `n` bytes (n <= want().size) were written at want().data.
  DecodeEvent commit(size_t n);
  // Copies from `data` into want() and commits, until an event other than kNeedMore or the end of
  // `data`; *used = bytes consumed.
  DecodeEvent feed(const uint8_t* data, size_t len, size_t* used);

  // After kPayload: the data part (data_size() bytes) goes to `dst`, which holds `capacity`
  // bytes. A destination too small is check 10: kError with kTooLarge.
  DecodeEvent accept_payload(void* dst, size_t capacity);
  // After kPayload: read and CRC-check the data part without keeping it.
  DecodeEvent skip_payload();
  // After kPayload (or at any time): refuse the frame on the caller's grounds.
  DecodeEvent refuse(ErrorCode code, uint32_t detail = 0);

  // The stream ended. kNone if that was between frames; else kTruncated (and the error state).
  ErrorCode end_of_stream();

  bool at_frame_start() const { return state_ == State::kHeader && got_ == 0; }
  // Valid from kPayload (or kFrame) until the next byte is committed.
  const FrameHeader& header() const { return header_; }
  const uint8_t* fixed() const { return fixed_; }
  uint32_t fixed_size() const { return fixed_size_; }
  uint32_t data_size() const { return data_size_; }

  ErrorCode error() const { return error_; }
  uint32_t error_detail() const { return error_detail_; }
  uint32_t max_payload() const { return max_payload_; }

 private:
  enum class State : uint8_t { kHeader, kFixed, kRoute, kData, kSkip, kCrc, kError };

  DecodeEvent fail(ErrorCode code, uint32_t detail);
  DecodeEvent on_header_bytes();
  DecodeEvent on_fixed_done();
  DecodeEvent after_fixed();
  DecodeEvent on_crc_done();

  uint32_t max_payload_;
  bool check_sequence_;
  State state_ = State::kHeader;
  uint32_t got_ = 0;  // bytes of the current part received
  uint32_t next_sequence_ = 0;
  uint32_t crc_ = 0;  // running CRC of the frame so far
  FrameHeader header_{};
  uint32_t fixed_size_ = 0;
  uint32_t data_size_ = 0;
  uint8_t* dst_ = nullptr;
  ErrorCode error_ = ErrorCode::kNone;
  uint32_t error_detail_ = 0;
  uint8_t head_[kHeaderSize] = {};
  uint8_t fixed_[kMaxFixedSize] = {};
  uint8_t trailer_[kCrcSize] = {};
  uint8_t scratch_[64] = {};  // skip_payload() reads into this
};

}  // namespace nmcm::net
