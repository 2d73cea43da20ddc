#include "nmcm/net/frame.h"

#include "nmcm/crc32.h"
#include "nmcm/net/wire.h"

namespace nmcm::net {

void encode_header(const FrameHeader& h, uint8_t out[kHeaderSize]) {
  for (int i = 0; i < 4; ++i) out[i] = kMagic[i];
  out[4] = kVersion;
  out[5] = static_cast<uint8_t>(h.type);
  put_u16(out + 6, h.flags);
  put_u32(out + 8, h.sequence);
  put_u32(out + 12, h.batch);
  put_u16(out + 16, h.micro_batch);
  put_u16(out + 18, 0);
  put_u32(out + 20, h.payload_length);
  put_u32(out + 24, crc32(out, kHeaderFieldsSize));
}

ErrorCode check_header(const uint8_t in[kHeaderSize], uint32_t max_payload, FrameHeader* out,
                       uint32_t* detail) {
  *detail = 0;
  for (int i = 0; i < 4; ++i) {
    if (in[i] != kMagic[i]) return ErrorCode::kBadMagic;
  }
  if (in[4] != kVersion) {
    *detail = in[4];
    return ErrorCode::kBadVersion;
  }
  if (crc32(in, kHeaderFieldsSize) != get_u32(in + 24)) return ErrorCode::kBadHeader;
  const uint16_t flags = get_u16(in + 6);
  if ((flags & ~kKnownFlags) != 0 || get_u16(in + 18) != 0) return ErrorCode::kBadHeader;
  TypeInfo info{};
  if (!type_info(in[5], &info)) {
    *detail = in[5];
    return ErrorCode::kUnknownType;
  }
  const uint32_t length = get_u32(in + 20);
  if (length > max_payload) {
    *detail = length;
    return ErrorCode::kTooLarge;
  }
  if (length < info.fixed_size || (!info.has_data && length != info.fixed_size)) {
    *detail = length;
    return ErrorCode::kMalformed;
  }
  *out = FrameHeader{static_cast<MsgType>(in[5]),
                     flags,
                     get_u32(in + 8),
                     get_u32(in + 12),
                     get_u16(in + 16),
                     length};
  return ErrorCode::kNone;
}

void FrameCrc::update(const void* data, size_t len) {
  crc_ = crc32(static_cast<const uint8_t*>(data), len, crc_);
}

void FrameCrc::put(uint8_t out[kCrcSize]) const { put_u32(out, crc_); }

}  // namespace nmcm::net
