#include "job.h"

#include <cstring>

namespace nmcm::host {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "job files are read as little-endian");

constexpr uint32_t kHeaderSize = 64;
constexpr uint16_t kVersion = 1;
constexpr uint8_t kFlagUpstreamGrad = 1;

template <typename T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename T>
void take(const uint8_t*& p, uint64_t count, std::vector<T>* out) {
  out->resize(count);
  if (count) std::memcpy(out->data(), p, count * sizeof(T));
  p += count * sizeof(T);
}

}  // namespace

bool parse_job(const std::vector<uint8_t>& bytes, Job* job, std::string* error) {
  if (bytes.size() < kHeaderSize || std::memcmp(bytes.data(), "NMCJ", 4) != 0) {
    *error = "not a job file (magic is not NMCJ)";
    return false;
  }
  const uint8_t* h = bytes.data();
  if (get<uint16_t>(h + 4) != kVersion || get<uint16_t>(h + 6) != kHeaderSize) {
    *error = "job file version or header size is not supported";
    return false;
  }
  job->sample_count = get<uint32_t>(h + 8);
  job->sample_floats = get<uint32_t>(h + 12);
  const uint32_t step_count = get<uint32_t>(h + 16);
  const uint32_t index_count = get<uint32_t>(h + 20);
  job->lr = get<float>(h + 24);
  job->momentum = get<float>(h + 28);
  job->weight_decay = get<float>(h + 32);
  const uint8_t loss = h[36];
  const uint8_t flags = h[37];
  job->micro_batch = get<uint32_t>(h + 40);
  job->grad_floats = get<uint32_t>(h + 44);
  if (loss > 1 || (flags & ~kFlagUpstreamGrad) != 0) {
    *error = "unknown loss kind or job flags";
    return false;
  }
  job->loss = static_cast<LossKind>(loss);
  if ((flags & kFlagUpstreamGrad) == 0) job->grad_floats = 0;

  const uint64_t n = job->sample_count;
  const uint64_t expected = kHeaderSize + 4 * (n * job->sample_floats + n + n * job->grad_floats +
                                               uint64_t{step_count} + index_count);
  if (bytes.size() != expected) {
    *error = "job file size does not match its header";
    return false;
  }
  const uint8_t* p = h + kHeaderSize;
  take(p, n * job->sample_floats, &job->x);
  take(p, n, &job->y);
  take(p, n * job->grad_floats, &job->grad);
  take(p, step_count, &job->steps);
  take(p, index_count, &job->order);

  uint64_t total = 0;
  for (uint32_t s : job->steps) {
    if (s == 0) {
      *error = "a step has no samples";
      return false;
    }
    total += s;
  }
  if (total != index_count) {
    *error = "step sizes do not add up to the index count";
    return false;
  }
  for (uint32_t i : job->order) {
    if (i >= job->sample_count) {
      *error = "a sample index is out of range";
      return false;
    }
  }
  return true;
}

}  // namespace nmcm::host
