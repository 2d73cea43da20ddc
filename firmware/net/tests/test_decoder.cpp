// The frame decoder's state machine: the order of its checks, that nothing reaches the caller's
// memory before the header and fixed part are checked, and the error and end-of-stream rules.
#include "nmcm/net/decoder.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "nmcm/crc32.h"
#include "nmcm/net/payload.h"
#include "nmcm/net/wire.h"

namespace nmcm::net {
namespace {

// A frame built by hand: header, fixed part, data, CRC.
std::vector<uint8_t> make_frame(MsgType type, const std::vector<uint8_t>& payload,
                                uint32_t sequence = 0, uint16_t flags = 0) {
  std::vector<uint8_t> out(kHeaderSize);
  encode_header(FrameHeader{type, flags, sequence, 3, 1, static_cast<uint32_t>(payload.size())},
                out.data());
  out.insert(out.end(), payload.begin(), payload.end());
  uint8_t crc[4];
  put_u32(crc, crc32(out.data(), out.size()));
  out.insert(out.end(), crc, crc + 4);
  return out;
}

std::vector<uint8_t> tensor_payload(uint16_t samples, uint32_t features) {
  std::vector<uint8_t> p(TensorHead::kSize + size_t{samples} * features * 4);
  encode(TensorHead{samples, features}, p.data());
  for (size_t i = TensorHead::kSize; i < p.size(); ++i) p[i] = static_cast<uint8_t>(i);
  return p;
}

DecodeEvent feed_all(FrameDecoder* d, const std::vector<uint8_t>& bytes, size_t* used) {
  return d->feed(bytes.data(), bytes.size(), used);
}

TEST(FrameHeader, EncodesAndChecksRoundTrip) {
  uint8_t raw[kHeaderSize];
  encode_header(FrameHeader{MsgType::kGradients, kFlagEval, 7, 0xDEADBEEF, 513, 40}, raw);
  EXPECT_EQ(0, std::memcmp(raw, "NMCP\x01\x14", 6));
  FrameHeader h{};
  uint32_t detail = 99;
  ASSERT_EQ(check_header(raw, 4096, &h, &detail), ErrorCode::kNone);
  EXPECT_EQ(h.type, MsgType::kGradients);
  EXPECT_EQ(h.flags, kFlagEval);
  EXPECT_EQ(h.sequence, 7u);
  EXPECT_EQ(h.batch, 0xDEADBEEFu);
  EXPECT_EQ(h.micro_batch, 513u);
  EXPECT_EQ(h.payload_length, 40u);
  EXPECT_EQ(detail, 0u);
}

TEST(FrameHeader, ChecksInTheOrderOfTheSpec) {
  uint8_t raw[kHeaderSize];
  encode_header(FrameHeader{MsgType::kInputs, 0, 0, 0, 0, 5000}, raw);
  FrameHeader h{};
  uint32_t detail = 0;
  // too large (6) comes before the fixed-part size (7) ...
  EXPECT_EQ(check_header(raw, 4096, &h, &detail), ErrorCode::kTooLarge);
  EXPECT_EQ(detail, 5000u);
  // ... a header CRC mismatch (3) before both ...
  raw[24] ^= 1;
  EXPECT_EQ(check_header(raw, 4096, &h, &detail), ErrorCode::kBadHeader);
  // ... the version (2) before the header CRC ...
  raw[4] = 9;
  EXPECT_EQ(check_header(raw, 4096, &h, &detail), ErrorCode::kBadVersion);
  EXPECT_EQ(detail, 9u);
  // ... and the magic (1) first of all.
  raw[0] = 'X';
  EXPECT_EQ(check_header(raw, 4096, &h, &detail), ErrorCode::kBadMagic);
}

TEST(FrameDecoder, RefusesAForeignStreamAfterFourBytes) {
  FrameDecoder d(4096);
  const uint8_t http[] = {'G', 'E', 'T', ' '};
  size_t used = 0;
  EXPECT_EQ(d.feed(http, 4, &used), DecodeEvent::kError);
  EXPECT_EQ(used, 4u);
  EXPECT_EQ(d.error(), ErrorCode::kBadMagic);
}

TEST(FrameDecoder, RefusesTooLargeBeforeAnyPayloadByte) {
  FrameDecoder d(512);
  const std::vector<uint8_t> frame = make_frame(MsgType::kInputs, tensor_payload(2, 100));
  size_t used = 0;
  EXPECT_EQ(feed_all(&d, frame, &used), DecodeEvent::kError);
  EXPECT_EQ(used, kHeaderSize);  // stopped at the header: the payload was never read
  EXPECT_EQ(d.error(), ErrorCode::kTooLarge);
  EXPECT_EQ(d.error_detail(), 808u);
  EXPECT_EQ(d.want().size, 0u);
}

TEST(FrameDecoder, WritesTheDataPartOnlyIntoTheChosenDestination) {
  FrameDecoder d(4096);
  const std::vector<uint8_t> payload = tensor_payload(2, 3);
  const std::vector<uint8_t> frame = make_frame(MsgType::kActivations, payload);
  size_t used = 0;
  ASSERT_EQ(feed_all(&d, frame, &used), DecodeEvent::kPayload);
  EXPECT_EQ(used, kHeaderSize + TensorHead::kSize);  // header and fixed part, nothing more
  EXPECT_EQ(d.data_size(), 24u);
  TensorHead head{};
  ASSERT_TRUE(decode(d.fixed(), &head));
  EXPECT_EQ(head.samples, 2u);
  EXPECT_EQ(head.features, 3u);

  uint8_t arena[40];
  std::memset(arena, 0xAA, sizeof arena);
  ASSERT_EQ(d.accept_payload(arena + 8, 24), DecodeEvent::kNeedMore);
  size_t rest = 0;
  EXPECT_EQ(d.feed(frame.data() + used, frame.size() - used, &rest), DecodeEvent::kFrame);
  EXPECT_EQ(used + rest, frame.size());
  EXPECT_EQ(0, std::memcmp(arena + 8, payload.data() + 8, 24));
  for (int i = 0; i < 8; ++i) EXPECT_EQ(arena[i], 0xAA) << i;
  for (int i = 32; i < 40; ++i) EXPECT_EQ(arena[i], 0xAA) << i;
  EXPECT_TRUE(d.at_frame_start());
}

TEST(FrameDecoder, RefusesADestinationThatCannotHoldTheData) {
  FrameDecoder d(4096);
  const std::vector<uint8_t> frame = make_frame(MsgType::kInputs, tensor_payload(2, 3));
  size_t used = 0;
  ASSERT_EQ(feed_all(&d, frame, &used), DecodeEvent::kPayload);
  uint8_t small[23];
  EXPECT_EQ(d.accept_payload(small, sizeof small), DecodeEvent::kError);
  EXPECT_EQ(d.error(), ErrorCode::kTooLarge);
  EXPECT_EQ(d.error_detail(), 24u);
}

TEST(FrameDecoder, ReportsABadCrcAfterTheDataArrived) {
  FrameDecoder d(4096);
  std::vector<uint8_t> frame = make_frame(MsgType::kGradients, tensor_payload(1, 4));
  frame[kHeaderSize + 10] ^= 0x40;
  size_t used = 0;
  ASSERT_EQ(feed_all(&d, frame, &used), DecodeEvent::kPayload);
  uint8_t dst[16];
  d.accept_payload(dst, sizeof dst);
  size_t rest = 0;
  EXPECT_EQ(d.feed(frame.data() + used, frame.size() - used, &rest), DecodeEvent::kError);
  EXPECT_EQ(d.error(), ErrorCode::kBadCrc);
}

TEST(FrameDecoder, SkipPayloadStillChecksTheCrc) {
  FrameDecoder d(4096);
  std::vector<uint8_t> frame = make_frame(MsgType::kLabels, {2, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0});
  size_t used = 0;
  ASSERT_EQ(feed_all(&d, frame, &used), DecodeEvent::kPayload);
  d.skip_payload();
  size_t rest = 0;
  EXPECT_EQ(d.feed(frame.data() + used, frame.size() - used, &rest), DecodeEvent::kFrame);

  frame = make_frame(MsgType::kLabels, {2, 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0}, 1);
  frame[frame.size() - 1] ^= 1;
  ASSERT_EQ(feed_all(&d, frame, &used), DecodeEvent::kPayload);
  d.skip_payload();
  EXPECT_EQ(d.feed(frame.data() + used, frame.size() - used, &rest), DecodeEvent::kError);
  EXPECT_EQ(d.error(), ErrorCode::kBadCrc);
}

TEST(FrameDecoder, NumbersFramesPerConnection) {
  FrameDecoder d(4096);
  size_t used = 0;
  EXPECT_EQ(feed_all(&d, make_frame(MsgType::kShutdown, {}, 0), &used), DecodeEvent::kFrame);
  EXPECT_EQ(feed_all(&d, make_frame(MsgType::kShutdown, {}, 1), &used), DecodeEvent::kFrame);
  EXPECT_EQ(feed_all(&d, make_frame(MsgType::kShutdown, {}, 1), &used), DecodeEvent::kError);
  EXPECT_EQ(d.error(), ErrorCode::kSequence);
  EXPECT_EQ(d.error_detail(), 2u);  // the sequence that was expected
  d.reset();
  EXPECT_EQ(feed_all(&d, make_frame(MsgType::kShutdown, {}, 0), &used), DecodeEvent::kFrame);

  FrameDecoder any(4096, /*check_sequence=*/false);
  EXPECT_EQ(feed_all(&any, make_frame(MsgType::kShutdown, {}, 41), &used), DecodeEvent::kFrame);
}

TEST(FrameDecoder, ErrorsAreStickyUntilReset) {
  FrameDecoder d(4096);
  std::vector<uint8_t> frame = make_frame(MsgType::kStatusRequest, {});
  frame[4] = 2;
  size_t used = 0;
  EXPECT_EQ(feed_all(&d, frame, &used), DecodeEvent::kError);
  EXPECT_EQ(used, kHeaderSize);  // refused with the header: no payload byte consumed
  EXPECT_EQ(d.want().size, 0u);
  EXPECT_EQ(d.feed(frame.data() + used, frame.size() - used, &used), DecodeEvent::kError);
  EXPECT_EQ(used, 0u);
  EXPECT_EQ(d.end_of_stream(), ErrorCode::kBadVersion);
  d.reset();
  EXPECT_EQ(d.error(), ErrorCode::kNone);
  EXPECT_TRUE(d.at_frame_start());
}

TEST(FrameDecoder, EndOfStreamIsTruncationOnlyInsideAFrame) {
  FrameDecoder d(4096);
  EXPECT_EQ(d.end_of_stream(), ErrorCode::kNone);
  const std::vector<uint8_t> frame = make_frame(MsgType::kShutdown, {});
  size_t used = 0;
  d.feed(frame.data(), frame.size() - 1, &used);
  EXPECT_EQ(d.end_of_stream(), ErrorCode::kTruncated);
  EXPECT_EQ(d.error(), ErrorCode::kTruncated);
}

TEST(FrameDecoder, RefuseRejectsOnTheCallersGrounds) {
  FrameDecoder d(4096);
  const std::vector<uint8_t> frame = make_frame(MsgType::kInputs, tensor_payload(1, 1));
  size_t used = 0;
  ASSERT_EQ(feed_all(&d, frame, &used), DecodeEvent::kPayload);
  EXPECT_EQ(d.refuse(ErrorCode::kStageMismatch, 63), DecodeEvent::kError);
  EXPECT_EQ(d.error(), ErrorCode::kStageMismatch);
  EXPECT_EQ(d.error_detail(), 63u);
}

TEST(FrameDecoder, CommitOfMoreThanWantedIsAnError) {
  FrameDecoder d(4096);
  EXPECT_EQ(d.commit(kHeaderSize + 1), DecodeEvent::kError);
  EXPECT_EQ(d.error(), ErrorCode::kInternal);
}

TEST(PayloadLimit, IsTheBiggestFrameAStageReceives) {
  EXPECT_EQ(payload_limit(8, 64, 10, false), 8u + 8 * 64 * 4);
  EXPECT_EQ(payload_limit(8, 10, 64, false), 8u + 8 * 64 * 4);  // GRADIENTS of its output
  EXPECT_EQ(payload_limit(8, 10, 64, true), kMinPayloadLimit);  // the last gets LABELS instead
  EXPECT_EQ(payload_limit(1, 1, 1, true), kMinPayloadLimit);
  EXPECT_EQ(payload_limit(0xFFFF, 0xFFFFFFFF, 1, false), UINT32_MAX);  // saturates, never wraps
}

TEST(TypeInfo, KnowsEveryTypeAndNothingElse) {
  int known = 0;
  for (int t = 0; t < 256; ++t) {
    TypeInfo info{};
    if (type_info(static_cast<uint8_t>(t), &info)) {
      ++known;
      EXPECT_LE(info.fixed_size, kMaxFixedSize);
      EXPECT_STRNE(type_name(static_cast<MsgType>(t)), "?");
    }
  }
  EXPECT_EQ(known, 17);
}

}  // namespace
}  // namespace nmcm::net
