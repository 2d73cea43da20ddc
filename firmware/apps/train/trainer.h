// Running a job on one stage: the loop a single node runs. The simulated pipeline node runs the
// same run_batch steps, with inputs, labels and gradients arriving over the network instead of
// from a job file.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "job.h"
#include "nmcm/stage.h"

namespace nmcm::host {

// Per-sample results of one batch, in batch order, for callers that want them (may be null).
struct BatchCapture {
  float* outputs = nullptr;   // [count, output_floats]
  float* grad_out = nullptr;  // [count, input_floats]; not on the first stage
};

struct BatchResult {
  double loss_sum = 0;  // last stage only
  uint32_t correct = 0;
};

struct StepRecord {
  float loss;  // batch mean
  uint32_t correct;
  uint32_t samples;
};

// Checks that the job fits the stage (sample size, micro-batch, upstream gradient size); for
// `training` also that the stage is a whole model (first and last).
bool job_fits(const Stage& stage, const Job& job, bool training, std::string* error);

// One batch: micro-batches of at most the job's micro-batch size, up to slots() of them in flight
// (their forwards, then their backwards, as a pipeline stage runs them). Inputs from job.x, labels
// from job.y on the last stage, upstream gradients from job.grad on the others. Gradients
// accumulate into the stage; nothing is zeroed or stepped here.
Status run_batch(Stage& stage, const Job& job, const uint32_t* indices, uint32_t count,
                 BatchResult* result, const BatchCapture* capture);

// Every step of the job: zero_grad, run_batch, sgd_step. Appends one record per step.
Status train(Stage& stage, const Job& job, std::vector<StepRecord>* records);

}  // namespace nmcm::host
