// Frame header and CRC (docs/protocol.md, "Frame"): header (28 bytes) | payload | CRC-32 of both.
//
// Sending needs no buffer for the payload: encode the header, then send header, payload pieces
// (straight from the arena) and the CRC, feeding each piece to a FrameCrc on the way
// (frame_io.h's FrameSender does exactly that).
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/net/protocol.h"

namespace nmcm::net {

struct FrameHeader {
  MsgType type;
  uint16_t flags;
  uint32_t sequence;
  uint32_t batch;
  uint16_t micro_batch;
  uint32_t payload_length;
};

// Writes the kHeaderSize bytes of `h`: magic, version, fields, header CRC.
void encode_header(const FrameHeader& h, uint8_t out[kHeaderSize]);

// Checks 1-7 of docs/protocol.md ("Checks a receiver makes") on a whole header, in that order.
// Fills *out and returns kNone, or returns the first failure with the offending value in *detail
// (the length for kTooLarge, the type for kUnknownType; 0 otherwise). The sequence is not checked
// here: it is state of the connection (FrameDecoder).
ErrorCode check_header(const uint8_t in[kHeaderSize], uint32_t max_payload, FrameHeader* out,
                       uint32_t* detail);

// Running CRC-32 (zlib's) over the pieces of a frame.
class FrameCrc {
 public:
  void update(const void* data, size_t len);
  uint32_t value() const { return crc_; }
  // The 4 trailer bytes, little-endian.
  void put(uint8_t out[kCrcSize]) const;

 private:
  uint32_t crc_ = 0;
};

}  // namespace nmcm::net
