// The suite reader. Each check is one line of README.md here, "Checks"; reads are byte by byte
// (little-endian), so neither alignment nor the host's byte order matters.
#include "suite.h"

#include <cstring>

#include "nmcm/blob.h"
#include "nmcm/crc32.h"

namespace nmcm::app {
namespace {

constexpr std::uint8_t kMagic[4] = {'N', 'M', 'C', 'S'};

std::uint16_t rd16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] | (p[1] << 8)); }
std::uint32_t rd32(const std::uint8_t* p) {
  return std::uint32_t{p[0]} | (std::uint32_t{p[1]} << 8) | (std::uint32_t{p[2]} << 16) |
         (std::uint32_t{p[3]} << 24);
}
float rdf32(const std::uint8_t* p) {
  const std::uint32_t bits = rd32(p);
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}
bool finite_bits(std::uint32_t bits) { return (bits & 0x7F800000u) != 0x7F800000u; }
bool all_zero(const std::uint8_t* p, std::uint32_t n) {
  for (std::uint32_t i = 0; i < n; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

Status bad_entry(std::uint32_t i, const char* message) {
  return error_at(StatusCode::kMalformed, "entry", static_cast<std::int32_t>(i), message);
}

// Entry record i: where it starts.
const std::uint8_t* record(const std::uint8_t* data, std::uint32_t i) {
  return data + kSuiteHeaderSize + i * kSuiteEntrySize;
}

}  // namespace

Status suite_check(const std::uint8_t* data, std::uint32_t size, std::uint32_t arena_capacity,
                   Suite* suite) {
  if (data == nullptr || suite == nullptr) {
    return error(StatusCode::kInvalidArgument, "no suite given");
  }
  if (size < kSuiteHeaderSize + kSuiteCrcSize) {
    return error(StatusCode::kTruncated, "suite is shorter than a header and its CRC");
  }
  if (std::memcmp(data, kMagic, sizeof kMagic) != 0) {
    return error(StatusCode::kBadMagic, "not a calibration suite (magic is not NMCS)");
  }
  if (rd16(data + 4) != kSuiteVersion) {
    return error(StatusCode::kUnsupportedVersion, "suite format version is not 1");
  }
  if (rd16(data + 6) != kSuiteHeaderSize) {
    return error(StatusCode::kMalformed, "suite header size is not 32");
  }
  const std::uint32_t total = rd32(data + 8);
  if (total > size) return error(StatusCode::kTruncated, "suite is shorter than its header says");
  if (total < size) return error(StatusCode::kMalformed, "suite is longer than its header says");
  const std::uint32_t body_end = size - kSuiteCrcSize;
  if (crc32(data, body_end) != rd32(data + body_end)) {
    return error(StatusCode::kCorrupt, "CRC mismatch: the suite is corrupt");
  }
  const std::uint32_t count = rd16(data + 12);
  if (rd16(data + 14) != kSuiteEntrySize) {
    return error(StatusCode::kMalformed, "suite entry size is not 32");
  }
  if (!all_zero(data + 20, kSuiteHeaderSize - 20)) {
    return error(StatusCode::kMalformed, "suite header's reserved bytes are not zero");
  }
  if (count == 0 || count > kMaxSuiteEntries) {
    return error(StatusCode::kMalformed, "suite entry count is 0 or above 1024");
  }
  const std::uint32_t table_end = kSuiteHeaderSize + count * kSuiteEntrySize;
  if (table_end > body_end) {
    return error(StatusCode::kTruncated, "suite entry table runs past the end of the suite");
  }
  const std::uint32_t arena = rd32(data + 16);
  if (arena > arena_capacity) {
    return error(StatusCode::kTooLarge, "suite needs a larger arena than this image has");
  }

  std::uint32_t previous_end = table_end;
  for (std::uint32_t i = 0; i < count; ++i) {
    const std::uint8_t* e = record(data, i);
    const std::uint32_t offset = rd32(e);
    const std::uint32_t bytes = rd32(e + 4);
    if (offset % 16 != 0) return bad_entry(i, "blob offset is not a multiple of 16");
    if (offset < previous_end) {
      return bad_entry(i, "blob overlaps the entry table or the blob before it");
    }
    if (offset > body_end || bytes > body_end - offset) {
      return bad_entry(i, "blob runs past the end of the suite");
    }
    if (bytes < kBlobHeaderSize + kBlobCrcSize) return bad_entry(i, "blob is too short");
    if (rd16(e + 8) == 0) return bad_entry(i, "sample count is 0");
    if (e[10] != static_cast<std::uint8_t>(LossKind::kCrossEntropy) &&
        e[10] != static_cast<std::uint8_t>(LossKind::kMse)) {
      return bad_entry(i, "unknown loss kind");
    }
    if (e[11] != 0 || !all_zero(e + 28, 4)) return bad_entry(i, "reserved bytes are not zero");
    if (!finite_bits(rd32(e + 12)) || !finite_bits(rd32(e + 16)) || !finite_bits(rd32(e + 20))) {
      return bad_entry(i, "learning rate, momentum or weight decay is not finite");
    }
    if (rd32(e + 24) == 0) return bad_entry(i, "data seed is 0 (xorshift32 would stay at 0)");
    previous_end = offset + bytes;
  }
  *suite = Suite{data, size, count, arena};
  return ok_status();
}

SuiteEntry suite_entry(const Suite& suite, std::uint32_t i) {
  const std::uint8_t* e = record(suite.data, i);
  SuiteEntry entry{};
  entry.blob = suite.data + rd32(e);
  entry.blob_size = rd32(e + 4);
  entry.samples = rd16(e + 8);
  entry.loss = static_cast<LossKind>(e[10]);
  entry.lr = rdf32(e + 12);
  entry.momentum = rdf32(e + 16);
  entry.weight_decay = rdf32(e + 20);
  entry.data_seed = rd32(e + 24);
  return entry;
}

}  // namespace nmcm::app
