// The blob loader refuses every damaged or mismatched blob with a status, never a crash: each check
// of docs/blob-format.md ("Checks the loader makes") on a golden blob from the model compiler, then
// a fuzz run (this binary runs under ASan/UBSan in the test build).
#include "nmcm/blob.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "nmcm/stage.h"
#include "test_util.h"

namespace nmcm {
namespace {

constexpr size_t kArena = 1 << 20;

void put16(std::vector<uint8_t>& b, size_t at, uint16_t v) {
  b[at] = static_cast<uint8_t>(v);
  b[at + 1] = static_cast<uint8_t>(v >> 8);
}
void put32(std::vector<uint8_t>& b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) b[at + i] = static_cast<uint8_t>(v >> (8 * i));
}
uint32_t get32(const std::vector<uint8_t>& b, size_t at) {
  return uint32_t{b[at]} | uint32_t{b[at + 1]} << 8 | uint32_t{b[at + 2]} << 16 |
         uint32_t{b[at + 3]} << 24;
}

Status check(const std::vector<uint8_t>& b, const StageExpect* expect = nullptr,
             size_t arena = kArena) {
  static StageLayout layout;
  return blob_check(b.data(), b.size(), arena, expect, &layout);
}

StageLayout layout_of(const std::vector<uint8_t>& b) {
  StageLayout layout{};
  EXPECT_TRUE(blob_check(b.data(), b.size(), kArena, nullptr, &layout).ok());
  return layout;
}

StageExpect expect_of(const std::vector<uint8_t>& b) {
  StageExpect e{};
  std::memcpy(e.model_hash, b.data() + 48, kModelHashSize);
  e.stage_index = static_cast<uint16_t>(b[12] | b[13] << 8);
  e.stage_count = static_cast<uint16_t>(b[14] | b[15] << 8);
  return e;
}

TEST(BlobLoader, AcceptsTheCompilersBlobs) {
  for (const char* name : {"cnn_whole", "cnn_stage0", "cnn_stage1", "mlp_whole"}) {
    const auto b = test::golden(name);
    const StageExpect e = expect_of(b);
    const Status s = check(b, &e);
    EXPECT_TRUE(s.ok()) << name << ": " << s.message;
  }
  const StageLayout l = layout_of(test::golden("cnn_stage0"));
  EXPECT_EQ(l.header.layer_count, 4u);
  EXPECT_EQ(l.header.tensor_count, 2u);
  EXPECT_EQ(l.header.slots, 2u);
  EXPECT_EQ(l.layers[0].kind, LayerKind::kConv2d);
  EXPECT_EQ(l.act[3][1], l.act[4][1]);  // flatten output shares its input's storage
  EXPECT_EQ(l.act_grad[0], kNoBuffer);  // the first stage computes no input gradient
}

TEST(BlobLoader, RefusesEveryTruncation) {
  const auto b = test::golden("cnn_stage0");
  static StageLayout layout;
  for (size_t len = 0; len < b.size(); ++len) {
    // A copy of exactly `len` bytes, so that ASan would see any read past the end.
    const std::vector<uint8_t> cut(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(len));
    const Status s = blob_check(cut.data(), len, kArena, nullptr, &layout);
    ASSERT_EQ(s.code, StatusCode::kTruncated) << len << ": " << s.message;
  }
}

TEST(BlobLoader, RefusesTrailingBytes) {
  auto b = test::golden("cnn_stage0");
  b.push_back(0);
  EXPECT_EQ(check(b).code, StatusCode::kMalformed);
}

TEST(BlobLoader, RefusesEverySingleBitFlip) {
  const auto b = test::golden("cnn_stage0");
  for (size_t bit = 0; bit < 8 * b.size(); ++bit) {
    auto f = b;
    f[bit / 8] ^= static_cast<uint8_t>(1u << (bit % 8));
    ASSERT_FALSE(check(f).ok()) << "bit " << bit;
  }
}

TEST(BlobLoader, RefusesOtherMagicAndVersions) {
  auto b = test::golden("mlp_whole");
  auto m = b;
  m[0] = 'X';
  EXPECT_EQ(check(m).code, StatusCode::kBadMagic);
  auto v = b;
  put16(v, 4, 2);
  blob_seal(v.data(), v.size());
  const Status newer = check(v);
  EXPECT_EQ(newer.code, StatusCode::kUnsupportedVersion);
  EXPECT_NE(std::string(newer.message).find("newer"), std::string::npos);
  put16(v, 4, 0);
  blob_seal(v.data(), v.size());
  EXPECT_EQ(check(v).code, StatusCode::kUnsupportedVersion);
}

TEST(BlobLoader, RefusesAnotherStageOrModel) {
  const auto b = test::golden("cnn_stage0");
  StageExpect e = expect_of(b);
  e.stage_index = 1;
  const Status stage = check(b, &e);
  EXPECT_EQ(stage.code, StatusCode::kMismatch);
  EXPECT_NE(std::string(stage.message).find("different stage"), std::string::npos);
  e = expect_of(b);
  e.stage_count = 3;
  EXPECT_EQ(check(b, &e).code, StatusCode::kMismatch);
  e = expect_of(b);
  e.model_hash[7] ^= 1;
  const Status model = check(b, &e);
  EXPECT_EQ(model.code, StatusCode::kMismatch);
  EXPECT_NE(std::string(model.message).find("different model"), std::string::npos);
}

TEST(BlobLoader, RefusesAnArenaLargerThanTheNodes) {
  const auto b = test::golden("cnn_whole");
  const uint32_t arena = get32(b, 28);
  EXPECT_TRUE(check(b, nullptr, arena).ok());
  EXPECT_EQ(check(b, nullptr, arena - 1).code, StatusCode::kTooLarge);
}

// Structural damage with a valid CRC: each must be caught by its own check.
struct Damage {
  const char* what;
  void (*apply)(std::vector<uint8_t>& b, const StageLayout& l);
  StatusCode code;
  const char* subject;  // expected Status::subject, or nullptr for header-level checks
};

size_t layer_at(const StageLayout& l, uint32_t i) { return l.header.layer_table + 48 * i; }
size_t tensor_at(const StageLayout& l, uint32_t t) { return l.header.tensor_table + 32 * t; }
size_t buffer_at(const StageLayout& l, uint32_t k) { return l.header.buffer_table + 16 * k; }

// Index of the first buffer record of a kind (and activation index), or -1.
int find_buffer(const std::vector<uint8_t>& b, const StageLayout& l, BufferKind kind, int index,
                int slot) {
  for (uint32_t k = 0; k < l.header.buffer_count; ++k) {
    const BufferDesc d = blob_buffer(b.data(), l.header, k);
    if (d.kind == kind && (index < 0 || d.index == index) && (slot < 0 || d.slot == slot)) {
      return static_cast<int>(k);
    }
  }
  return -1;
}

const Damage kDamages[] = {
    {"unknown layer kind", [](auto& b, auto& l) { b[layer_at(l, 1)] = 9; }, StatusCode::kMalformed,
     "layer"},
    {"unknown layer flag", [](auto& b, auto& l) { b[layer_at(l, 1) + 1] = 2; },
     StatusCode::kMalformed, "layer"},
    {"bad rank", [](auto& b, auto& l) { b[layer_at(l, 0) + 2] = 2; }, StatusCode::kMalformed,
     "layer"},
    {"conv stride that does not give the output size",
     [](auto& b, auto& l) { put16(b, layer_at(l, 0) + 36, 2); }, StatusCode::kMalformed, "layer"},
    {"shapes that do not chain", [](auto& b, auto& l) { put32(b, layer_at(l, 1) + 8, 7); },
     StatusCode::kMalformed, "layer"},
    {"zero dimension", [](auto& b, auto& l) { put32(b, layer_at(l, 0) + 12, 0); },
     StatusCode::kMalformed, "layer"},
    {"huge dimensions",
     [](auto& b, auto& l) {
       put32(b, layer_at(l, 0) + 8, 0xFFFFFFFF);
       put32(b, layer_at(l, 0) + 12, 0xFFFFFFFF);
     },
     StatusCode::kMalformed, "layer"},
    {"maxpool padding above half the kernel",
     [](auto& b, auto& l) { put16(b, layer_at(l, 2) + 40, 2); }, StatusCode::kMalformed, "layer"},
    {"weight reference out of range", [](auto& b, auto& l) { put16(b, layer_at(l, 0) + 44, 5); },
     StatusCode::kMalformed, "layer"},
    {"relu with a weight", [](auto& b, auto& l) { put16(b, layer_at(l, 1) + 44, 0); },
     StatusCode::kMalformed, "layer"},
    {"tensor count off by one", [](auto& b, auto& l) { put32(b, tensor_at(l, 0) + 4, 73); },
     StatusCode::kMalformed, "tensor"},
    {"tensor data past the end", [](auto& b, auto& l) { put32(b, tensor_at(l, 1), 0xFFFFFFF0u); },
     StatusCode::kMalformed, "tensor"},
    {"tensor owned by the wrong layer", [](auto& b, auto& l) { put16(b, tensor_at(l, 1) + 8, 1); },
     StatusCode::kMalformed, "tensor"},
    {"tensor role swapped", [](auto& b, auto& l) { b[tensor_at(l, 0) + 10] = 1; },
     StatusCode::kMalformed, "tensor"},
    {"buffer outside the arena",
     [](auto& b, auto& l) { put32(b, buffer_at(l, 0), l.header.arena_size); },
     StatusCode::kMalformed, "buffer"},
    {"unaligned buffer", [](auto& b, auto& l) { put32(b, buffer_at(l, 0), 8); },
     StatusCode::kMalformed, "buffer"},
    {"unknown buffer kind", [](auto& b, auto& l) { b[buffer_at(l, 0) + 8] = 9; },
     StatusCode::kMalformed, "buffer"},
    {"buffer too small", [](auto& b, auto& l) { put32(b, buffer_at(l, 0) + 4, 4); },
     StatusCode::kMalformed, "buffer"},
    {"two live buffers sharing bytes",
     [](auto& b, auto& l) { put32(b, buffer_at(l, 1), get32(b, buffer_at(l, 0))); },
     StatusCode::kMalformed, "buffer"},
    {"lifetime shorter than the use",
     [](auto& b, auto& l) {
       const int k = find_buffer(b, l, BufferKind::kActGrad, 2, -1);
       put16(b, buffer_at(l, static_cast<uint32_t>(k)) + 14, 0);
       put16(b, buffer_at(l, static_cast<uint32_t>(k)) + 12, 0);
     },
     StatusCode::kMalformed, "buffer"},
    {"stashed activation made shared",
     [](auto& b, auto& l) {
       b[buffer_at(l, static_cast<uint32_t>(find_buffer(b, l, BufferKind::kAct, 0, 1))) + 9] = 0xFF;
     },
     StatusCode::kMalformed, "buffer"},
    {"flatten output moved",
     [](auto& b, auto& l) {
       const int k = find_buffer(b, l, BufferKind::kAct, 4, 0);
       put32(b, buffer_at(l, static_cast<uint32_t>(k)), l.header.arena_size - 512);
     },
     StatusCode::kMalformed, nullptr},
    {"missing gradient buffer",
     [](auto& b, auto& l) {
       const int k = find_buffer(b, l, BufferKind::kGrad, 0, -1);
       b[buffer_at(l, static_cast<uint32_t>(k)) + 8] = static_cast<uint8_t>(BufferKind::kParam);
     },
     StatusCode::kMalformed, "buffer"},
    {"layer count that does not match the tables", [](auto& b, auto&) { put16(b, 16, 5); },
     StatusCode::kMalformed, nullptr},
    {"momentum buffers without the flag", [](auto& b, auto&) { put16(b, 22, 1); },
     StatusCode::kMalformed, "buffer"},
    {"flags contradicting the stage", [](auto& b, auto&) { put16(b, 22, 4 | 2); },
     StatusCode::kMalformed, nullptr},
    {"stage index past the count", [](auto& b, auto&) { put16(b, 12, 2); }, StatusCode::kMalformed,
     nullptr},
    {"no micro-batch", [](auto& b, auto&) { put16(b, 24, 0); }, StatusCode::kMalformed, nullptr},
    {"more slots than the firmware holds", [](auto& b, auto&) { put16(b, 26, kMaxSlots + 1); },
     StatusCode::kTooLarge, nullptr},
    {"arena size below the buffers",
     [](auto& b, auto& l) { put32(b, 28, l.header.arena_size - 16); }, StatusCode::kMalformed,
     "buffer"},
};

TEST(BlobLoader, RefusesStructuralDamageWithAValidCrc) {
  const auto clean = test::golden("cnn_stage0");
  const StageLayout l = layout_of(clean);
  for (const Damage& d : kDamages) {
    auto b = clean;
    d.apply(b, l);
    blob_seal(b.data(), b.size());
    const Status s = check(b);
    EXPECT_EQ(s.code, d.code) << d.what << ": " << s.message;
    if (d.subject != nullptr && s.subject != nullptr) {
      EXPECT_STREQ(s.subject, d.subject) << d.what << ": " << s.message;
    } else if (d.subject != nullptr) {
      ADD_FAILURE() << d.what << ": no subject in '" << s.message << "'";
    }
  }
}

// Random damage, mostly to the header and tables and mostly with the CRC re-sealed (so that the
// checks after the CRC are exercised). Any blob the loader accepts is then run through a whole
// training step, so that ASan/UBSan see every buffer the executor touches.
TEST(BlobLoader, FuzzNeverCrashes) {
  std::mt19937 rng(2024);
  static test::Arena arena(kArena);
  static Stage stage;
  int accepted = 0, runs = 0;
  const uint32_t interesting[] = {0,  1,   2,      3,      4,       15,         16,        17,
                                  64, 255, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF};
  for (const char* name : {"cnn_whole", "cnn_stage0", "cnn_stage1", "mlp_whole"}) {
    const auto clean = test::golden(name);
    const StageLayout l = layout_of(clean);
    for (int iter = 0; iter < 5000; ++iter, ++runs) {
      auto b = clean;
      const size_t region = rng() % 10 < 8 ? l.header.data : b.size();
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        const size_t at = rng() % (region - 4);
        switch (rng() % 4) {
          case 0:
            b[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
            break;
          case 1:
            b[at] = static_cast<uint8_t>(rng());
            break;
          case 2:
            put16(b, at & ~size_t{1}, static_cast<uint16_t>(interesting[rng() % 15]));
            break;
          default:
            put32(b, at & ~size_t{3}, interesting[rng() % 15]);
            break;
        }
      }
      if (rng() % 10 < 9) blob_seal(b.data(), b.size());
      const size_t len = rng() % 20 == 0 ? rng() % b.size() : b.size();
      const Status s = stage.load(b.data(), len, arena.data(), arena.size(), nullptr);
      if (!s.ok()) {
        ASSERT_NE(s.message, nullptr);
        continue;
      }
      ++accepted;
      const uint32_t n = stage.micro_batch();
      for (uint32_t slot = 0; slot < stage.slots(); ++slot) {
        std::memset(stage.input(slot), 0, size_t{n} * stage.input_floats() * sizeof(float));
        ASSERT_TRUE(stage.forward(slot, n).ok());
        if (stage.is_last()) {
          std::memset(stage.labels(slot), 0, size_t{n} * sizeof(int32_t));
          LossResult r;
          const Status seeded = stage.loss_backward_seed(slot, n, n, LossKind::kCrossEntropy, &r);
          if (!seeded.ok()) continue;  // e.g. an output that is not 1-D
        } else {
          std::memset(stage.grad_in(), 0, size_t{n} * stage.output_floats() * sizeof(float));
        }
        ASSERT_TRUE(stage.backward(slot, n).ok());
      }
      const bool momentum = (stage.layout().header.flags & kFlagMomentum) != 0;
      ASSERT_TRUE(stage.sgd_step(0.01f, momentum ? 0.9f : 0.0f, 1e-3f).ok());
    }
  }
  // Mutations of the tensor data or of unused bits keep a blob valid; most others are refused.
  EXPECT_GT(accepted, 0);
  EXPECT_LT(accepted, runs / 2);
  std::printf("fuzz: %d of %d mutated blobs accepted and run\n", accepted, runs);
}

}  // namespace
}  // namespace nmcm
