// The calibration suite (README.md here, "Suite format"): stage blobs of whole models, each with
// the micro-batch, loss and optimizer settings of the one training step the image runs on it.
// Written by nmcm_deploy/costs/measure.py. Nothing in it is trusted before suite_check has passed,
// and every read is bounds-checked against the suite's length.
#pragma once

#include <cstdint>

#include "nmcm/loss.h"
#include "nmcm/status.h"

namespace nmcm::app {

constexpr std::uint16_t kSuiteVersion = 1;
constexpr std::uint32_t kSuiteHeaderSize = 32;
constexpr std::uint32_t kSuiteEntrySize = 32;
constexpr std::uint32_t kSuiteCrcSize = 4;
constexpr std::uint32_t kMaxSuiteEntries = 1024;

// A suite that passed suite_check.
struct Suite {
  const std::uint8_t* data;
  std::uint32_t size;
  std::uint32_t entry_count;
  std::uint32_t arena_size;  // the largest arena of its blobs
};

// One entry of a checked suite.
struct SuiteEntry {
  const std::uint8_t* blob;  // 16-byte aligned if the suite is
  std::uint32_t blob_size;
  std::uint32_t samples;  // the micro-batch, which is the whole batch
  LossKind loss;
  float lr;
  float momentum;
  float weight_decay;
  std::uint32_t data_seed;  // of the inputs and labels (xorshift32, never 0)
};

// Checks the header, the CRC and every entry (bounds, order, values) of the `size` bytes at
// `data`, against an image whose arena holds `arena_capacity` bytes; fills `suite`. A failure
// names the entry it is about (subject "entry") where there is one. The blobs themselves are
// checked when they are loaded (Stage::load).
Status suite_check(const std::uint8_t* data, std::uint32_t size, std::uint32_t arena_capacity,
                   Suite* suite);

// Entry i < suite.entry_count of a checked suite.
SuiteEntry suite_entry(const Suite& suite, std::uint32_t i);

}  // namespace nmcm::app
