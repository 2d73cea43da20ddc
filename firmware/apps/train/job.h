// The job file of nmcm-train: data, batch order and hyper-parameters (docs/host-trainer.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "nmcm/loss.h"

namespace nmcm::host {

struct Job {
  uint32_t sample_count = 0;
  uint32_t sample_floats = 0;  // per-sample input floats
  uint32_t grad_floats = 0;    // per-sample upstream-gradient floats (0: none)
  uint32_t micro_batch = 0;    // 0: the blob's
  float lr = 0, momentum = 0, weight_decay = 0;
  LossKind loss = LossKind::kCrossEntropy;
  std::vector<float> x;         // [sample_count, sample_floats]
  std::vector<int32_t> y;       // [sample_count]
  std::vector<float> grad;      // [sample_count, grad_floats]
  std::vector<uint32_t> steps;  // samples per step
  std::vector<uint32_t> order;  // sample indices of all steps, concatenated
};

// Parses and checks a job file; false (and `error` set) on anything malformed.
bool parse_job(const std::vector<uint8_t>& bytes, Job* job, std::string* error);

}  // namespace nmcm::host
