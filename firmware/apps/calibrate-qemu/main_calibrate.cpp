// The calibration image (README.md here): instructions of the very layer kernels a node runs, on
// QEMU's MPS2 image of a core (mps2-an386 for the Cortex-M4 build, mps2-an500 for the Cortex-M7
// one), over a suite of models. The board image (../calibrate-board) is this same program timed
// by the DWT cycle counter instead: cycles on the Nucleo board itself. For each entry of the
// embedded suite it loads the entry's blob (a whole model as one stage), fills the input with
// pseudo-random floats and the labels with class ids, and runs one training step exactly as a node
// runs a batch that is one micro-batch (runtime/src/batch.cpp): zero_grad, forward,
// loss_backward_seed, backward, sgd_step. The node's stopwatch (../node-qemu/stage_stopwatch.h)
// times every layer's forward and backward, the loss and the step; one line per entry goes to the
// log (semihosting):
//
//   calibrate entry=3 samples=16 forward=9880,3240,... backward=20920,...,0 loss=1400 step=6200
//
// then `calibrate done`, and QEMU exits with status 0. A suite or blob that fails a check, or a
// step the executor refuses, is one `fatal: ...` line and exit status 1.
//
// Every line is also kept in RAM, for a debug probe to read where the log UART is not what nmcm
// reads (boards): `nmcm_calibration_log` holds `nmcm_calibration_log_used` bytes of text, and
// `nmcm_calibration_state` says kRunning, kDone or kFailed (kOverflow: a line did not fit).
#include <cstdint>

#include "nmcm/config.h"
#include "nmcm/loss.h"
#include "nmcm/port/arena.h"
#include "nmcm/port/line.h"
#include "nmcm/port/port.h"
#include "nmcm/stage.h"
#include "nmcm/status.h"
#include "nmcm_calibration.h"
#include "stage_stopwatch.h"
#include "suite.h"

// suite_data.S: the suite's bytes in the image and their count.
extern "C" const std::uint8_t nmcm_calibration_suite[];
extern "C" const std::uint32_t nmcm_calibration_suite_size;

#ifndef NMCM_CALIBRATION_LOG_BYTES
#define NMCM_CALIBRATION_LOG_BYTES 16384
#endif

// Read by the host through the debug probe (nmcm_deploy/costs/measure.py, board_log): the names
// and the state values are that contract.
extern "C" {
char nmcm_calibration_log[NMCM_CALIBRATION_LOG_BYTES];
volatile std::uint32_t nmcm_calibration_log_used;
volatile std::uint32_t nmcm_calibration_state;
}

namespace {

namespace g = nmcm::generated;

static_assert(g::kCalibrationArenaSize > 0, "a suite's arena is never empty");

// The arena: static, sized by the suite's largest (nmcm_calibration.h, generated with the suite).
alignas(16) std::uint8_t g_arena[g::kCalibrationArenaSize] NMCM_ARENA_SECTION;
nmcm::Stage g_stage;
nmcm::app::StageStopwatch g_stopwatch;

// What one entry's training step took, per piece of work.
struct StepFigures {
  std::uint64_t forward[nmcm::kMaxLayers];
  std::uint64_t backward[nmcm::kMaxLayers];
  std::uint64_t loss;
  std::uint64_t step;
};
StepFigures g_figures;

// Values unlikely to be left in RAM by chance (whatever ran before, or power-on contents).
enum CalibrationState : std::uint32_t {
  kRunning = 0x52554E31,
  kDone = 0x454E4F44,
  kFailed = 0x4C494146,
  kOverflow = 0x4C465653,  // a line did not fit the RAM log
};

// One line to the RAM log.
void keep(const char* text) {
  std::uint32_t used = nmcm_calibration_log_used;
  std::uint32_t n = 0;
  while (text[n] != '\0') ++n;
  if (used + n + 1 > sizeof nmcm_calibration_log) {
    nmcm_calibration_state = kOverflow;
    return;
  }
  for (std::uint32_t i = 0; i < n; ++i) nmcm_calibration_log[used + i] = text[i];
  nmcm_calibration_log[used + n] = '\n';
  nmcm_calibration_log_used = used + n + 1;
}

// One line to the port's log and to the RAM log.
void say(const char* text) {
  nmcm::port::log(text);
  keep(text);
}

[[noreturn]] void fail(const char* text) {
  keep(text);
  nmcm_calibration_state = kFailed;
  nmcm::port::fatal(text);  // logs it
}

bool time_every_piece(void*, nmcm::StagePhase, std::uint32_t, std::uint32_t) { return true; }

void add_figure(void* context, nmcm::StagePhase phase, std::uint32_t layer,
                std::uint64_t instructions) {
  auto* figures = static_cast<StepFigures*>(context);
  switch (phase) {
    case nmcm::StagePhase::kForward:
      figures->forward[layer] += instructions;
      break;
    case nmcm::StagePhase::kBackward:
      figures->backward[layer] += instructions;
      break;
    case nmcm::StagePhase::kLoss:
      figures->loss += instructions;
      break;
    case nmcm::StagePhase::kStep:
      figures->step += instructions;
      break;
  }
}

// Marsaglia's xorshift32: the inputs and labels of an entry, reproducible from its seed on the
// host (nmcm_deploy/costs/measure.py, `entry_data`).
struct XorShift32 {
  std::uint32_t state;
  std::uint32_t next() {
    state ^= state << 13;
    state ^= state >> 17;
    state ^= state << 5;
    return state;
  }
  // Uniform on [-1, 1) in steps of 2^-23: exact in float32, so the host computes the same value.
  float next_float() { return static_cast<float>(next() >> 8) * (1.0f / 8388608.0f) - 1.0f; }
};

// Every input value of the micro-batch (sample by sample), then every label.
void fill_data(nmcm::Stage& stage, std::uint32_t samples, std::uint32_t seed) {
  XorShift32 random{seed};
  float* x = stage.input(0);
  const std::uint32_t floats = samples * stage.input_floats();
  for (std::uint32_t i = 0; i < floats; ++i) x[i] = random.next_float();
  std::int32_t* y = stage.labels(0);
  const std::uint32_t classes = stage.output_floats();
  for (std::uint32_t i = 0; i < samples; ++i) {
    y[i] = static_cast<std::int32_t>(random.next() % classes);
  }
}

[[noreturn]] void refuse(std::uint32_t entry, const char* what, const nmcm::Status& status) {
  nmcm::port::Line<224> line;
  line.text("calibration entry ").dec(entry).text(": ").text(what).text(" (");
  line.text(nmcm::status_code_name(status.code)).text("): ").text(status.message);
  if (status.subject != nullptr) {
    line.text(" [").text(status.subject).text(" ").sdec(status.index).text("]");
  }
  fail(line.c_str());
}

void check(std::uint32_t entry, const char* what, const nmcm::Status& status) {
  if (!status.ok()) refuse(entry, what, status);
}

// One training step of entry i: loaded, filled, timed, logged.
void run_entry(const nmcm::app::Suite& suite, std::uint32_t i) {
  const nmcm::app::SuiteEntry entry = nmcm::app::suite_entry(suite, i);
  check(i, "blob refused",
        g_stage.load(entry.blob, entry.blob_size, g_arena, sizeof g_arena, nullptr));
  if (g_stage.stage_count() != 1) {
    refuse(i, "blob refused",
           nmcm::error(nmcm::StatusCode::kMismatch, "not a whole model (stage_count is not 1)"));
  }
  if (entry.samples > g_stage.micro_batch()) {
    refuse(i, "entry refused",
           nmcm::error(nmcm::StatusCode::kInvalidArgument,
                       "more samples than the blob's micro-batch"));
  }
  const std::uint32_t n = entry.samples;
  fill_data(g_stage, n, entry.data_seed);

  g_figures = StepFigures{};
  g_stopwatch.attach(g_stage, time_every_piece, add_figure, &g_figures);
  nmcm::LossResult loss{};
  g_stage.zero_grad();
  check(i, "forward failed", g_stage.forward(0, n));
  check(i, "loss failed", g_stage.loss_backward_seed(0, n, n, entry.loss, &loss));
  check(i, "backward failed", g_stage.backward(0, n));
  check(i, "step failed", g_stage.sgd_step(entry.lr, entry.momentum, entry.weight_decay));
  g_stage.set_probe(nullptr, nullptr);

  // 32 layers x 2 x up to 20 digits and a comma, and the rest.
  nmcm::port::Line<1500> line;
  line.text("calibrate entry=").dec(i).text(" samples=").dec(n).text(" forward=");
  const std::uint32_t layers = g_stage.layer_count();
  for (std::uint32_t l = 0; l < layers; ++l) line.text(l ? "," : "").dec(g_figures.forward[l]);
  line.text(" backward=");
  for (std::uint32_t l = 0; l < layers; ++l) line.text(l ? "," : "").dec(g_figures.backward[l]);
  line.text(" loss=").dec(g_figures.loss).text(" step=").dec(g_figures.step);
  say(line.c_str());
}

}  // namespace

int main() {
  nmcm_calibration_log_used = 0;
  nmcm_calibration_state = kRunning;
  nmcm::port::init();
  nmcm::port::Line<160> hello;
  hello.text("nmcm calibrate: suite ").dec(nmcm_calibration_suite_size);
  hello.text(" bytes, arena ").dec(sizeof g_arena).text(" bytes, figures in ");
  hello.text(nmcm::app::StageStopwatch::kUnit);
  say(hello.c_str());

  nmcm::app::Suite suite{};
  const nmcm::Status checked = nmcm::app::suite_check(
      nmcm_calibration_suite, nmcm_calibration_suite_size, sizeof g_arena, &suite);
  if (!checked.ok()) {
    nmcm::port::Line<224> line;
    line.text("calibration suite refused (").text(nmcm::status_code_name(checked.code));
    line.text("): ").text(checked.message);
    if (checked.subject != nullptr) {
      line.text(" [").text(checked.subject).text(" ").sdec(checked.index).text("]");
    }
    fail(line.c_str());
  }
  for (std::uint32_t i = 0; i < suite.entry_count; ++i) run_entry(suite, i);
  say("calibrate done");
  if (nmcm_calibration_state == kRunning) nmcm_calibration_state = kDone;
  return 0;  // the port ends QEMU with this status; a board halts
}
