// The host trainer's job parser refuses malformed job files (docs/host-trainer.md).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "job.h"

namespace nmcm::host {
namespace {

// A valid job: 3 samples of 2 floats, 2 steps of 2 and 1 samples.
std::vector<uint8_t> make_job() {
  std::vector<uint8_t> b(64, 0);
  std::memcpy(b.data(), "NMCJ", 4);
  auto put = [&b](size_t at, uint32_t v) { std::memcpy(b.data() + at, &v, 4); };
  b[4] = 1;
  b[6] = 64;
  put(8, 3);   // samples
  put(12, 2);  // floats per sample
  put(16, 2);  // steps
  put(20, 3);  // indices
  const float lr = 0.1f;
  std::memcpy(b.data() + 24, &lr, 4);
  auto append = [&b](uint32_t v) {
    const size_t at = b.size();
    b.resize(at + 4);
    std::memcpy(b.data() + at, &v, 4);
  };
  for (int i = 0; i < 6; ++i) append(0x3F800000);  // x = 1.0f
  for (uint32_t y : {0u, 1u, 2u}) append(y);
  for (uint32_t s : {2u, 1u}) append(s);
  for (uint32_t i : {2u, 0u, 1u}) append(i);
  return b;
}

TEST(HostJob, ParsesAValidJob) {
  Job job;
  std::string error;
  ASSERT_TRUE(parse_job(make_job(), &job, &error)) << error;
  EXPECT_EQ(job.sample_count, 3u);
  EXPECT_EQ(job.steps, (std::vector<uint32_t>{2, 1}));
  EXPECT_EQ(job.order, (std::vector<uint32_t>{2, 0, 1}));
  EXPECT_FLOAT_EQ(job.lr, 0.1f);
  EXPECT_EQ(job.x[5], 1.0f);
}

TEST(HostJob, RefusesMalformedJobs) {
  Job job;
  std::string error;
  auto bad_magic = make_job();
  bad_magic[0] = 'X';
  EXPECT_FALSE(parse_job(bad_magic, &job, &error));
  auto short_file = make_job();
  short_file.pop_back();
  EXPECT_FALSE(parse_job(short_file, &job, &error));
  EXPECT_NE(error.find("size"), std::string::npos);
  auto bad_index = make_job();
  bad_index[bad_index.size() - 4] = 3;  // index 3 of 3 samples
  EXPECT_FALSE(parse_job(bad_index, &job, &error));
  auto bad_steps = make_job();
  bad_steps[bad_steps.size() - 20] = 1;  // steps 1 + 1 != 3 indices
  EXPECT_FALSE(parse_job(bad_steps, &job, &error));
  auto bad_loss = make_job();
  bad_loss[36] = 5;
  EXPECT_FALSE(parse_job(bad_loss, &job, &error));
  EXPECT_FALSE(parse_job(std::vector<uint8_t>(10, 0), &job, &error));
}

}  // namespace
}  // namespace nmcm::host
