#include "nmcm/net/decoder.h"

#include <cstring>

#include "nmcm/crc32.h"
#include "nmcm/net/payload.h"
#include "nmcm/net/wire.h"

namespace nmcm::net {

FrameDecoder::FrameDecoder(uint32_t max_payload, bool check_sequence)
    : max_payload_(max_payload), check_sequence_(check_sequence) {}

void FrameDecoder::reset() {
  state_ = State::kHeader;
  got_ = 0;
  next_sequence_ = 0;
  crc_ = 0;
  header_ = FrameHeader{};
  fixed_size_ = 0;
  data_size_ = 0;
  dst_ = nullptr;
  error_ = ErrorCode::kNone;
  error_detail_ = 0;
}

ByteSpan FrameDecoder::want() {
  switch (state_) {
    case State::kHeader:
      return ByteSpan{head_ + got_, kHeaderSize - got_};
    case State::kFixed:
      return ByteSpan{fixed_ + got_, fixed_size_ - got_};
    case State::kData:
      return ByteSpan{dst_ + got_, data_size_ - got_};
    case State::kSkip: {
      const uint32_t left = data_size_ - got_;
      return ByteSpan{scratch_, left < sizeof scratch_ ? left : sizeof scratch_};
    }
    case State::kCrc:
      return ByteSpan{trailer_ + got_, kCrcSize - got_};
    case State::kRoute:
    case State::kError:
      break;
  }
  return ByteSpan{nullptr, 0};
}

DecodeEvent FrameDecoder::fail(ErrorCode code, uint32_t detail) {
  state_ = State::kError;
  error_ = code;
  error_detail_ = detail;
  return DecodeEvent::kError;
}

DecodeEvent FrameDecoder::commit(size_t n) {
  const ByteSpan span = want();
  if (n == 0) return state_ == State::kError ? DecodeEvent::kError : DecodeEvent::kNeedMore;
  if (n > span.size) return fail(ErrorCode::kInternal, static_cast<uint32_t>(n));
  const uint32_t count = static_cast<uint32_t>(n);
  switch (state_) {
    case State::kHeader:
      got_ += count;
      return on_header_bytes();
    case State::kFixed:
      got_ += count;
      return got_ == fixed_size_ ? on_fixed_done() : DecodeEvent::kNeedMore;
    case State::kData:
    case State::kSkip:
      crc_ = crc32(span.data, count, crc_);
      got_ += count;
      if (got_ == data_size_) {
        state_ = State::kCrc;
        got_ = 0;
      }
      return DecodeEvent::kNeedMore;
    case State::kCrc:
      got_ += count;
      return got_ == kCrcSize ? on_crc_done() : DecodeEvent::kNeedMore;
    case State::kRoute:
    case State::kError:
      break;
  }
  return fail(ErrorCode::kInternal, 0);
}

DecodeEvent FrameDecoder::on_header_bytes() {
  // Checks 1 and 2 as soon as their bytes are in: a stream that is not ours is refused at once
  // instead of after a timeout.
  if (got_ >= 4) {
    for (int i = 0; i < 4; ++i) {
      if (head_[i] != kMagic[i]) return fail(ErrorCode::kBadMagic, 0);
    }
  }
  if (got_ >= 5 && head_[4] != kVersion) return fail(ErrorCode::kBadVersion, head_[4]);
  if (got_ < kHeaderSize) return DecodeEvent::kNeedMore;

  uint32_t detail = 0;
  const ErrorCode code = check_header(head_, max_payload_, &header_, &detail);
  if (code != ErrorCode::kNone) return fail(code, detail);
  if (check_sequence_ && header_.sequence != next_sequence_) {
    return fail(ErrorCode::kSequence, next_sequence_);
  }
  TypeInfo info{};
  type_info(static_cast<uint8_t>(header_.type), &info);  // known: check_header made sure
  fixed_size_ = info.fixed_size;
  data_size_ = header_.payload_length - info.fixed_size;
  crc_ = crc32(head_, kHeaderSize);
  got_ = 0;
  if (fixed_size_ == 0) return on_fixed_done();
  state_ = State::kFixed;
  return DecodeEvent::kNeedMore;
}

DecodeEvent FrameDecoder::on_fixed_done() {
  crc_ = crc32(fixed_, fixed_size_, crc_);
  const ErrorCode code = check_fixed(header_.type, fixed_, data_size_);
  if (code != ErrorCode::kNone) return fail(code, header_.payload_length);
  got_ = 0;
  if (data_size_ > 0) {
    state_ = State::kRoute;
    return DecodeEvent::kPayload;
  }
  state_ = State::kCrc;
  return DecodeEvent::kNeedMore;
}

DecodeEvent FrameDecoder::accept_payload(void* dst, size_t capacity) {
  if (state_ != State::kRoute) return fail(ErrorCode::kInternal, 0);
  if (dst == nullptr || capacity < data_size_) return fail(ErrorCode::kTooLarge, data_size_);
  dst_ = static_cast<uint8_t*>(dst);
  state_ = State::kData;
  return DecodeEvent::kNeedMore;
}

DecodeEvent FrameDecoder::skip_payload() {
  if (state_ != State::kRoute) return fail(ErrorCode::kInternal, 0);
  state_ = State::kSkip;
  return DecodeEvent::kNeedMore;
}

DecodeEvent FrameDecoder::refuse(ErrorCode code, uint32_t detail) { return fail(code, detail); }

DecodeEvent FrameDecoder::on_crc_done() {
  if (get_u32(trailer_) != crc_) return fail(ErrorCode::kBadCrc, 0);
  next_sequence_ = header_.sequence + 1;
  state_ = State::kHeader;
  got_ = 0;
  dst_ = nullptr;
  return DecodeEvent::kFrame;
}

DecodeEvent FrameDecoder::feed(const uint8_t* data, size_t len, size_t* used) {
  size_t pos = 0;
  DecodeEvent event = state_ == State::kError ? DecodeEvent::kError : DecodeEvent::kNeedMore;
  while (event == DecodeEvent::kNeedMore && pos < len) {
    const ByteSpan span = want();
    if (span.size == 0) break;
    const size_t n = len - pos < span.size ? len - pos : span.size;
    std::memcpy(span.data, data + pos, n);
    pos += n;
    event = commit(n);
  }
  *used = pos;
  return event;
}

ErrorCode FrameDecoder::end_of_stream() {
  if (state_ == State::kError) return error_;
  if (at_frame_start()) return ErrorCode::kNone;
  fail(ErrorCode::kTruncated, 0);
  return ErrorCode::kTruncated;
}

}  // namespace nmcm::net
