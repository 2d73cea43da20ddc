#include "trainer.h"

#include <cstring>

namespace nmcm::host {
namespace {

uint32_t micro_batch_of(const Stage& stage, const Job& job) {
  return job.micro_batch != 0 ? job.micro_batch : stage.micro_batch();
}

}  // namespace

bool job_fits(const Stage& stage, const Job& job, bool training, std::string* error) {
  if (training && !(stage.is_first() && stage.is_last())) {
    *error = "training needs a whole-model blob (first and last stage)";
    return false;
  }
  if (job.sample_floats != stage.input_floats()) {
    *error = "job samples have " + std::to_string(job.sample_floats) + " floats, the stage input " +
             std::to_string(stage.input_floats());
    return false;
  }
  if (micro_batch_of(stage, job) > stage.micro_batch()) {
    *error = "job micro-batch " + std::to_string(job.micro_batch) +
             " is larger than the blob's planned " + std::to_string(stage.micro_batch());
    return false;
  }
  if (!stage.is_last() && job.grad_floats != stage.output_floats()) {
    *error = "a stage that is not last needs upstream gradients of " +
             std::to_string(stage.output_floats()) + " floats per sample in the job";
    return false;
  }
  return true;
}

Status run_batch(Stage& stage, const Job& job, const uint32_t* indices, uint32_t count,
                 BatchResult* result, const BatchCapture* capture) {
  const uint32_t mb = micro_batch_of(stage, job);
  const uint32_t in_floats = stage.input_floats();
  const uint32_t out_floats = stage.output_floats();
  const uint32_t chunks = (count + mb - 1) / mb;
  for (uint32_t first = 0; first < chunks; first += stage.slots()) {
    const uint32_t in_flight = chunks - first < stage.slots() ? chunks - first : stage.slots();
    for (uint32_t slot = 0; slot < in_flight; ++slot) {
      const uint32_t begin = (first + slot) * mb;
      const uint32_t n = count - begin < mb ? count - begin : mb;
      float* x = stage.input(slot);
      for (uint32_t s = 0; s < n; ++s) {
        const uint32_t row = indices[begin + s];
        std::memcpy(x + size_t{s} * in_floats, &job.x[size_t{row} * in_floats],
                    in_floats * sizeof(float));
        if (stage.is_last()) stage.labels(slot)[s] = job.y[row];
      }
      NMCM_RETURN_IF_ERROR(stage.forward(slot, n));
      if (capture && capture->outputs) {
        std::memcpy(capture->outputs + size_t{begin} * out_floats, stage.output(slot),
                    size_t{n} * out_floats * sizeof(float));
      }
    }
    for (uint32_t slot = 0; slot < in_flight; ++slot) {
      const uint32_t begin = (first + slot) * mb;
      const uint32_t n = count - begin < mb ? count - begin : mb;
      if (stage.is_last()) {
        LossResult r{};
        NMCM_RETURN_IF_ERROR(stage.loss_backward_seed(slot, n, count, job.loss, &r));
        if (result) {
          result->loss_sum += static_cast<double>(r.loss_sum);
          result->correct += r.correct;
        }
      } else {
        float* g = stage.grad_in();
        for (uint32_t s = 0; s < n; ++s) {
          std::memcpy(g + size_t{s} * out_floats,
                      &job.grad[size_t{indices[begin + s]} * out_floats],
                      out_floats * sizeof(float));
        }
      }
      NMCM_RETURN_IF_ERROR(stage.backward(slot, n));
      if (capture && capture->grad_out && !stage.is_first()) {
        std::memcpy(capture->grad_out + size_t{begin} * in_floats, stage.grad_out(),
                    size_t{n} * in_floats * sizeof(float));
      }
    }
  }
  return ok_status();
}

Status train(Stage& stage, const Job& job, std::vector<StepRecord>* records) {
  size_t offset = 0;
  for (const uint32_t count : job.steps) {
    stage.zero_grad();
    BatchResult r;
    NMCM_RETURN_IF_ERROR(run_batch(stage, job, &job.order[offset], count, &r, nullptr));
    NMCM_RETURN_IF_ERROR(stage.sgd_step(job.lr, job.momentum, job.weight_decay));
    offset += count;
    records->push_back(StepRecord{static_cast<float>(r.loss_sum / count), r.correct, count});
  }
  return ok_status();
}

}  // namespace nmcm::host
