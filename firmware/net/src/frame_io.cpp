#include "nmcm/net/frame_io.h"

#include <cstring>

#include "nmcm/net/payload.h"

namespace nmcm::net {
namespace {

// Frames with at most this much payload go out in one send_all: one TCP segment (or W5500 SEND)
// instead of three for the small control messages.
constexpr uint32_t kCoalesce = 256;

}  // namespace

IoStatus FrameSender::send(MsgType type, const FrameMeta& meta, const uint8_t* fixed,
                           uint32_t fixed_size, const void* data, uint32_t data_size,
                           uint32_t timeout_ms) {
  if (fixed_size > kMaxFixedSize || data_size > UINT32_MAX - fixed_size) return IoStatus::kError;
  if ((fixed_size > 0 && fixed == nullptr) || (data_size > 0 && data == nullptr)) {
    return IoStatus::kError;
  }
  const uint32_t payload = fixed_size + data_size;
  const FrameHeader header{type, meta.flags, next_sequence_, meta.batch, meta.micro_batch, payload};
  uint8_t buf[kHeaderSize + kCoalesce + kCrcSize];
  encode_header(header, buf);
  if (fixed_size > 0) std::memcpy(buf + kHeaderSize, fixed, fixed_size);
  FrameCrc crc;
  crc.update(buf, kHeaderSize + fixed_size);
  if (data_size > 0) crc.update(data, data_size);

  IoStatus status;
  if (payload <= kCoalesce) {
    if (data_size > 0) std::memcpy(buf + kHeaderSize + fixed_size, data, data_size);
    crc.put(buf + kHeaderSize + payload);
    status = transport_->send_all(buf, kHeaderSize + payload + kCrcSize, timeout_ms);
  } else {
    // The data goes straight from the caller's memory (the arena): no copy of a tensor.
    uint8_t trailer[kCrcSize];
    crc.put(trailer);
    status = transport_->send_all(buf, kHeaderSize + fixed_size, timeout_ms);
    if (status == IoStatus::kOk) status = transport_->send_all(data, data_size, timeout_ms);
    if (status == IoStatus::kOk) status = transport_->send_all(trailer, kCrcSize, timeout_ms);
  }
  if (status == IoStatus::kOk) {
    ++next_sequence_;
    ++frames_sent_;
    bytes_sent_ += kHeaderSize + uint64_t{payload} + kCrcSize;
  }
  return status;
}

IoStatus FrameSender::send_error(ErrorCode code, uint32_t detail, const char* reason,
                                 const FrameMeta& meta, uint32_t timeout_ms) {
  uint8_t fixed[ErrorHead::kSize];
  encode(ErrorHead{code, detail}, fixed);
  uint32_t len = 0;
  while (reason != nullptr && len < kMaxErrorText && reason[len] != '\0') ++len;
  // Cut on a UTF-8 character boundary: never send half a character.
  if (reason != nullptr && reason[len] != '\0') {
    while (len > 0 && (static_cast<uint8_t>(reason[len]) & 0xC0u) == 0x80u) --len;
  }
  return send(MsgType::kError, meta, fixed, ErrorHead::kSize, reason, len, timeout_ms);
}

ReceiveResult receive_frame(Transport* transport, FrameDecoder* decoder, PayloadRouter* router,
                            uint32_t first_byte_ms, uint32_t inner_ms, uint64_t* bytes_received) {
  if (decoder->error() != ErrorCode::kNone) {
    return ReceiveResult{IoStatus::kOk, decoder->error(), decoder->error_detail()};
  }
  uint32_t wait = decoder->at_frame_start() ? first_byte_ms : inner_ms;
  for (;;) {
    const ByteSpan span = decoder->want();
    const IoResult r = transport->recv_some(span.data, span.size, wait);
    if (r.status == IoStatus::kTimeout) {
      if (decoder->at_frame_start()) return ReceiveResult{IoStatus::kTimeout, ErrorCode::kNone, 0};
      decoder->refuse(ErrorCode::kTimeout);
      return ReceiveResult{IoStatus::kTimeout, ErrorCode::kTimeout, 0};
    }
    if (r.status == IoStatus::kClosed) {
      return ReceiveResult{IoStatus::kClosed, decoder->end_of_stream(), 0};
    }
    if (r.status != IoStatus::kOk) return ReceiveResult{r.status, ErrorCode::kNone, 0};
    if (bytes_received != nullptr) *bytes_received += r.bytes;
    wait = inner_ms;

    DecodeEvent event = decoder->commit(r.bytes);
    if (event == DecodeEvent::kPayload) {
      const Route route = router != nullptr
                              ? router->route(*decoder)
                              : Route::refused(ErrorCode::kUnexpected, decoder->data_size());
      switch (route.action) {
        case Route::Action::kStore:
          event = decoder->accept_payload(route.dst, route.capacity);
          break;
        case Route::Action::kDiscard:
          event = decoder->skip_payload();
          break;
        case Route::Action::kRefuse:
          event = decoder->refuse(route.code, route.detail);
          break;
      }
    }
    if (event == DecodeEvent::kFrame) return ReceiveResult{IoStatus::kOk, ErrorCode::kNone, 0};
    if (event == DecodeEvent::kError) {
      return ReceiveResult{IoStatus::kOk, decoder->error(), decoder->error_detail()};
    }
  }
}

}  // namespace nmcm::net
