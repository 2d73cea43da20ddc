// nmcm-train: single-node training (and gradient probes) on the host from a stage blob and a job
// file. Formats and exit codes: docs/host-trainer.md.
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "file_io.h"
#include "job.h"
#include "nmcm/blob.h"
#include "nmcm/stage.h"
#include "trainer.h"

#ifndef NMCM_HOST_ARENA_BYTES
#define NMCM_HOST_ARENA_BYTES (64u << 20)
#endif

namespace {

using nmcm::Stage;
using nmcm::Status;

constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 64;  // BSD EX_USAGE, as the nmcm CLI (never 2, which means "changes")

// The node's one arena: static, as on a board (untouched pages cost nothing on the host).
alignas(16) uint8_t g_arena[NMCM_HOST_ARENA_BYTES];
Stage g_stage;

const char kUsage[] =
    "usage: nmcm-train train --blob FILE --job FILE --out FILE [--losses FILE] [options]\n"
    "       nmcm-train grad  --blob FILE --job FILE --out FILE [options]\n"
    "       nmcm-train check --blob FILE [options]\n"
    "options:\n"
    "  --arena-capacity BYTES     arena of the node being simulated (default: all of the host's)\n"
    "  --expect-stage INDEX/COUNT refuse a blob of another stage\n"
    "  --expect-hash HEX          refuse a blob of another model (32 hex digits)\n";

struct Args {
  std::string mode, blob, job, out, losses;
  size_t arena_capacity = sizeof g_arena;
  bool has_expect = false;
  nmcm::StageExpect expect{};
  bool expect_stage = false, expect_hash = false;
};

int fail(const std::string& message) {
  std::fprintf(stderr, "nmcm-train: %s\n", message.c_str());
  return kExitError;
}

int usage(const std::string& message) {
  std::fprintf(stderr, "nmcm-train: %s\n%s", message.c_str(), kUsage);
  return kExitUsage;
}

std::string describe(const Status& s) {
  std::string text;
  if (s.subject != nullptr) text += std::string(s.subject) + " " + std::to_string(s.index) + ": ";
  return text + s.message + " [" + nmcm::status_code_name(s.code) + "]";
}

bool parse_hex(const std::string& hex, uint8_t* out, size_t len) {
  if (hex.size() != 2 * len) return false;
  for (size_t i = 0; i < len; ++i) {
    char* end = nullptr;
    const std::string byte = hex.substr(2 * i, 2);
    const unsigned long v = std::strtoul(byte.c_str(), &end, 16);
    if (*end != '\0' || !std::isxdigit(static_cast<unsigned char>(byte[0])) ||
        !std::isxdigit(static_cast<unsigned char>(byte[1]))) {
      return false;
    }
    out[i] = static_cast<uint8_t>(v);
  }
  return true;
}

// Returns an empty string on success, else the usage error.
std::string parse_args(int argc, char** argv, Args* a) {
  if (argc < 2) return "missing mode";
  a->mode = argv[1];
  if (a->mode != "train" && a->mode != "grad" && a->mode != "check")
    return "unknown mode " + a->mode;
  for (int i = 2; i < argc; ++i) {
    const std::string opt = argv[i];
    if (i + 1 >= argc) return "option " + opt + " needs a value";
    const std::string value = argv[++i];
    if (opt == "--blob") {
      a->blob = value;
    } else if (opt == "--job") {
      a->job = value;
    } else if (opt == "--out") {
      a->out = value;
    } else if (opt == "--losses") {
      a->losses = value;
    } else if (opt == "--arena-capacity") {
      char* end = nullptr;
      const unsigned long long v = std::strtoull(value.c_str(), &end, 10);
      if (*end != '\0' || value.empty() || v > sizeof g_arena) {
        return "--arena-capacity must be a byte count up to " + std::to_string(sizeof g_arena);
      }
      a->arena_capacity = static_cast<size_t>(v);
    } else if (opt == "--expect-stage") {
      unsigned index = 0, count = 0;
      char tail = 0;
      if (std::sscanf(value.c_str(), "%u/%u%c", &index, &count, &tail) != 2 || count == 0 ||
          index >= count || count > 0xFFFF) {
        return "--expect-stage must be INDEX/COUNT, e.g. 0/2";
      }
      a->expect.stage_index = static_cast<uint16_t>(index);
      a->expect.stage_count = static_cast<uint16_t>(count);
      a->expect_stage = true;
    } else if (opt == "--expect-hash") {
      if (!parse_hex(value, a->expect.model_hash, sizeof a->expect.model_hash)) {
        return "--expect-hash must be 32 hex digits";
      }
      a->expect_hash = true;
    } else {
      return "unknown option " + opt;
    }
  }
  if (a->expect_stage != a->expect_hash) return "--expect-stage and --expect-hash go together";
  a->has_expect = a->expect_stage;
  if (a->blob.empty()) return "--blob is required";
  if (a->mode != "check" && (a->job.empty() || a->out.empty()))
    return "--job and --out are required";
  return "";
}

void put32(std::vector<uint8_t>* out, uint32_t v) {
  const uint8_t b[4] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8),
                        static_cast<uint8_t>(v >> 16), static_cast<uint8_t>(v >> 24)};
  out->insert(out->end(), b, b + 4);
}

void put_floats(std::vector<uint8_t>* out, const float* data, size_t count) {
  const uint8_t* p = reinterpret_cast<const uint8_t*>(data);
  out->insert(out->end(), p, p + count * sizeof(float));
}

int run_train(const Args& args, std::vector<uint8_t>& blob, const nmcm::host::Job& job) {
  std::vector<nmcm::host::StepRecord> records;
  records.reserve(job.steps.size());
  const auto start = std::chrono::steady_clock::now();
  const Status s = nmcm::host::train(g_stage, job, &records);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!s.ok()) return fail("training failed: " + describe(s));

  const nmcm::StageLayout& layout = g_stage.layout();
  for (uint32_t t = 0; t < g_stage.tensor_count(); ++t) {
    nmcm::blob_store_tensor(blob.data(), layout, t, g_stage.weights(t).data);
  }
  nmcm::blob_seal(blob.data(), blob.size());
  std::string error;
  if (!nmcm::host::write_file(args.out, blob.data(), blob.size(), &error)) return fail(error);
  if (!args.losses.empty()) {
    std::string csv = "step,loss,correct,samples\n";
    char line[96];
    for (size_t i = 0; i < records.size(); ++i) {
      std::snprintf(line, sizeof line, "%zu,%.9g,%u,%u\n", i, static_cast<double>(records[i].loss),
                    records[i].correct, records[i].samples);
      csv += line;
    }
    if (!nmcm::host::write_file(args.losses, csv.data(), csv.size(), &error)) return fail(error);
  }
  std::printf("{\"steps\": %zu, \"samples\": %zu, \"seconds\": %.9f, \"step_us\": %.3f}\n",
              job.steps.size(), job.order.size(), seconds,
              job.steps.empty() ? 0.0 : 1e6 * seconds / static_cast<double>(job.steps.size()));
  return kExitOk;
}

int run_grad(const Args& args, const nmcm::host::Job& job) {
  if (job.steps.size() != 1)
    return fail("grad mode runs exactly one step; the job has " + std::to_string(job.steps.size()));
  const uint32_t count = job.steps[0];
  const uint32_t in_floats = g_stage.is_first() ? 0 : g_stage.input_floats();
  std::vector<float> outputs(size_t{count} * g_stage.output_floats());
  std::vector<float> grad_out(size_t{count} * in_floats);
  nmcm::host::BatchCapture capture{outputs.data(), in_floats ? grad_out.data() : nullptr};
  nmcm::host::BatchResult result;
  g_stage.zero_grad();
  const Status s = nmcm::host::run_batch(g_stage, job, job.order.data(), count, &result, &capture);
  if (!s.ok()) return fail("batch failed: " + describe(s));

  std::vector<uint8_t> out;
  out.insert(out.end(), {'N', 'M', 'C', 'G'});
  put32(&out, 1);
  put32(&out, count);
  put32(&out, g_stage.output_floats());
  put32(&out, in_floats);
  put32(&out, g_stage.tensor_count());
  const float loss_sum = static_cast<float>(result.loss_sum);
  put_floats(&out, &loss_sum, 1);
  put32(&out, result.correct);
  put_floats(&out, outputs.data(), outputs.size());
  put_floats(&out, grad_out.data(), grad_out.size());
  for (uint32_t t = 0; t < g_stage.tensor_count(); ++t) {
    const nmcm::TensorView g = g_stage.grads(t);
    put_floats(&out, g.data, g.count());
  }
  std::string error;
  if (!nmcm::host::write_file(args.out, out.data(), out.size(), &error)) return fail(error);
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  const std::string problem = parse_args(argc, argv, &args);
  if (!problem.empty()) return usage(problem);

  std::vector<uint8_t> blob;
  std::string error;
  if (!nmcm::host::read_file(args.blob, &blob, &error)) return fail(error);
  const Status loaded = g_stage.load(blob.data(), blob.size(), g_arena, args.arena_capacity,
                                     args.has_expect ? &args.expect : nullptr);
  if (!loaded.ok()) return fail("blob refused: " + describe(loaded));
  if (args.mode == "check") {
    const nmcm::BlobHeader& h = g_stage.layout().header;
    std::printf(
        "{\"stage_index\": %u, \"stage_count\": %u, \"layers\": %u, \"tensors\": %u, "
        "\"arena_size\": %u, \"micro_batch\": %u, \"slots\": %u}\n",
        h.stage_index, h.stage_count, h.layer_count, h.tensor_count, h.arena_size, h.micro_batch,
        h.slots);
    return kExitOk;
  }

  std::vector<uint8_t> job_bytes;
  nmcm::host::Job job;
  if (!nmcm::host::read_file(args.job, &job_bytes, &error)) return fail(error);
  if (!nmcm::host::parse_job(job_bytes, &job, &error)) return fail("job refused: " + error);
  if (!nmcm::host::job_fits(g_stage, job, args.mode == "train", &error)) {
    return fail("job does not fit the stage: " + error);
  }
  return args.mode == "train" ? run_train(args, blob, job) : run_grad(args, job);
}
