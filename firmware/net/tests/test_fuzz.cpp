// A short fuzz loop over the decoder (run under ASan/UBSan with NMCM_SANITIZE=ON): random and
// mutated frames, fed in random pieces, with data destinations of random sizes allocated exactly
// (so any write past one is reported). The decoder must never crash, never write out of bounds,
// always make progress, and accept only frames whose fixed part decodes.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "net_test_util.h"
#include "nmcm/net/decoder.h"
#include "nmcm/net/payload.h"

namespace nmcm::net {
namespace {

constexpr int kIterations = 20000;

std::vector<std::vector<uint8_t>> seeds() {
  std::vector<std::vector<uint8_t>> out;
  for (const char* name : {"hello", "hello_ack", "error", "ack", "shutdown", "status",
                           "batch_begin", "inputs", "labels", "activations", "gradients", "metrics",
                           "step", "get_weights", "weights", "set_weights_momentum", "stream"}) {
    out.push_back(test::read_vector(name));
    EXPECT_FALSE(out.back().empty()) << name;
  }
  return out;
}

void mutate(std::mt19937* rng, std::vector<uint8_t>* b) {
  const int ops = 1 + static_cast<int>((*rng)() % 4);
  for (int k = 0; k < ops; ++k) {
    const size_t n = b->size();
    switch ((*rng)() % 5) {
      case 0:  // flip a bit
        if (n) (*b)[(*rng)() % n] ^= static_cast<uint8_t>(1u << ((*rng)() % 8));
        break;
      case 1:  // cut the tail
        if (n) b->resize((*rng)() % n);
        break;
      case 2: {  // insert random bytes
        const size_t at = n ? (*rng)() % (n + 1) : 0;
        std::vector<uint8_t> junk(1 + (*rng)() % 8);
        for (auto& x : junk) x = static_cast<uint8_t>((*rng)());
        b->insert(b->begin() + static_cast<long>(at), junk.begin(), junk.end());
        break;
      }
      case 3:  // overwrite a length byte: the most dangerous field
        if (n > 23) (*b)[20 + (*rng)() % 4] = static_cast<uint8_t>((*rng)());
        break;
      default:  // repeat a slice
        if (n) {
          const size_t at = (*rng)() % n;
          const size_t len = 1 + (*rng)() % 40;
          std::vector<uint8_t> slice(b->begin() + static_cast<long>(at),
                                     b->begin() + static_cast<long>(std::min(n, at + len)));
          b->insert(b->begin() + static_cast<long>(at), slice.begin(), slice.end());
        }
    }
  }
}

// Feeds `bytes` in random pieces; returns the number of frames accepted.
int run(std::mt19937* rng, const std::vector<uint8_t>& bytes, uint32_t max_payload) {
  FrameDecoder d(max_payload, (*rng)() % 2 == 0);
  std::unique_ptr<uint8_t[]> dst;
  size_t pos = 0;
  int frames = 0;
  while (pos < bytes.size()) {
    const size_t piece = 1 + (*rng)() % 64;
    const size_t n = std::min(piece, bytes.size() - pos);
    size_t used = 0;
    DecodeEvent e = d.feed(bytes.data() + pos, n, &used);
    pos += used;
    if (e == DecodeEvent::kPayload) {
      EXPECT_LE(d.data_size(), max_payload);
      EXPECT_EQ(d.fixed_size() + d.data_size(), d.header().payload_length);
      // Sometimes too small: must be refused, never overflowed.
      const size_t cap = (*rng)() % 8 == 0 ? (*rng)() % (d.data_size() + 1) : d.data_size();
      dst.reset(new uint8_t[cap ? cap : 1]);
      if ((*rng)() % 4 == 0) {
        e = d.skip_payload();
      } else {
        e = d.accept_payload(dst.get(), cap);
        if (cap < d.data_size()) {
          EXPECT_EQ(e, DecodeEvent::kError);
          EXPECT_EQ(d.error(), ErrorCode::kTooLarge);
        }
      }
    } else if (used == 0 && e == DecodeEvent::kNeedMore) {
      ADD_FAILURE() << "no progress at byte " << pos;
      return frames;
    }
    if (e == DecodeEvent::kFrame) {
      ++frames;
      uint8_t fixed_copy[kMaxFixedSize];
      std::copy(d.fixed(), d.fixed() + d.fixed_size(), fixed_copy);
      EXPECT_EQ(check_fixed(d.header().type, fixed_copy, d.data_size()), ErrorCode::kNone);
    }
    if (e == DecodeEvent::kError) {
      EXPECT_NE(d.error(), ErrorCode::kNone);
      EXPECT_EQ(d.want().size, 0u);
      return frames;
    }
  }
  d.end_of_stream();
  return frames;
}

TEST(DecoderFuzz, MutatedFramesNeverBreakTheDecoder) {
  const auto base = seeds();
  std::mt19937 rng(12345);
  int accepted = 0;
  for (int i = 0; i < kIterations; ++i) {
    std::vector<uint8_t> bytes = base[rng() % base.size()];
    if (rng() % 3 == 0) {
      const auto& more = base[rng() % base.size()];
      bytes.insert(bytes.end(), more.begin(), more.end());
    }
    mutate(&rng, &bytes);
    const uint32_t limits[] = {0, 64, 520, 4096, 1u << 20};
    accepted += run(&rng, bytes, limits[rng() % 5]);
  }
  EXPECT_GT(accepted, 0);  // the mutations leave some frames valid: the accept path is covered
}

TEST(DecoderFuzz, RandomBytesNeverBreakTheDecoder) {
  std::mt19937 rng(777);
  for (int i = 0; i < kIterations; ++i) {
    std::vector<uint8_t> bytes(rng() % 300);
    for (auto& x : bytes) x = static_cast<uint8_t>(rng());
    if (rng() % 2 && bytes.size() >= 5) {  // get past the first two checks half of the time
      bytes[0] = 'N', bytes[1] = 'M', bytes[2] = 'C', bytes[3] = 'P', bytes[4] = 1;
    }
    run(&rng, bytes, 4096);
  }
}

}  // namespace
}  // namespace nmcm::net
