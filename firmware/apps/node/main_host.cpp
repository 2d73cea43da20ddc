// nmcm-node: a `sim` node, one process per node (DESIGN.md, "Targets"). It loads its stage blob
// into the static arena its build pinned, serves the node runtime over POSIX TCP and exits after
// SHUTDOWN.
//
//   nmcm-node --blob FILE [--host 127.0.0.1] [--port N] [--firmware-hash HEX32]
//
// Exit codes: 0 after SHUTDOWN; 1 a bad blob or configuration (one line on stderr says why);
// 2 a usage error. Logs one line per event to stderr.
#include <arpa/inet.h>
#include <time.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "nmcm/blob.h"
#include "nmcm/runtime/node.h"
#include "nmcm/runtime/posix_network.h"
#include "nmcm/stage.h"
#include "node_app.h"

namespace {

constexpr int kExitOk = 0;
constexpr int kExitConfig = 1;
constexpr int kExitUsage = 2;

const char* g_node = "node";
timespec g_start{};

void log_line(const char* line) {
  timespec now{};
  clock_gettime(CLOCK_MONOTONIC, &now);
  const double t = static_cast<double>(now.tv_sec - g_start.tv_sec) +
                   static_cast<double>(now.tv_nsec - g_start.tv_nsec) * 1e-9;
  std::fprintf(stderr, "nmcm-node[%s] %9.3f %s\n", g_node, t, line);
}

void usage(std::FILE* out) {
  std::fprintf(
      out,
      "usage: nmcm-node --blob FILE [--host IPV4] [--port N] [--firmware-hash HEX32]\n"
      "  --blob FILE            the stage blob this node was built for (required)\n"
      "  --host IPV4            address to listen on (default 127.0.0.1)\n"
      "  --port N               port to listen on (default: the build's, %u)\n"
      "  --firmware-hash HEX32  build id reported in HELLO_ACK and STATUS (32 hex digits)\n",
      static_cast<unsigned>(nmcm::app::node_build().listen_port));
}

int usage_error(const char* what, const char* value) {
  std::fprintf(stderr, "nmcm-node: %s%s%s\n", what, value ? ": " : "", value ? value : "");
  usage(stderr);
  return kExitUsage;
}

bool parse_hex(const char* text, uint8_t (&out)[16]) {
  if (std::strlen(text) != 32) return false;
  for (int i = 0; i < 16; ++i) {
    unsigned v = 0;
    for (int k = 0; k < 2; ++k) {
      const char c = text[2 * i + k];
      unsigned d;
      if (c >= '0' && c <= '9') {
        d = static_cast<unsigned>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        d = static_cast<unsigned>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        d = static_cast<unsigned>(c - 'A' + 10);
      } else {
        return false;
      }
      v = v * 16 + d;
    }
    out[i] = static_cast<uint8_t>(v);
  }
  return true;
}

bool read_file(const char* path, std::vector<uint8_t>* out) {
  std::FILE* f = std::fopen(path, "rb");
  if (f == nullptr) return false;
  uint8_t buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) out->insert(out->end(), buf, buf + n);
  const bool ok = std::ferror(f) == 0;
  std::fclose(f);
  return ok;
}

// Large objects live in static storage, as on a board.
nmcm::Stage g_stage;
nmcm::runtime::PosixNetwork g_network;
nmcm::runtime::PosixClock g_clock;
nmcm::runtime::NodeConfig g_config;

}  // namespace

int main(int argc, char** argv) {
  clock_gettime(CLOCK_MONOTONIC, &g_start);
  const nmcm::app::NodeBuild& build = nmcm::app::node_build();
  g_node = build.node;

  const char* blob_path = nullptr;
  const char* host = "127.0.0.1";
  long port = build.listen_port;
  uint8_t firmware_hash[16] = {};
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage(stdout);
      return kExitOk;
    }
    const bool has_value = i + 1 < argc;
    if (arg == "--blob" || arg == "--host" || arg == "--port" || arg == "--firmware-hash") {
      if (!has_value) return usage_error("missing value for", argv[i]);
      const char* value = argv[++i];
      if (arg == "--blob") {
        blob_path = value;
      } else if (arg == "--host") {
        host = value;
      } else if (arg == "--port") {
        char* end = nullptr;
        port = std::strtol(value, &end, 10);
        if (end == value || *end != '\0' || port < 1 || port > 65535) {
          return usage_error("--port must be 1..65535, got", value);
        }
      } else if (!parse_hex(value, firmware_hash)) {
        return usage_error("--firmware-hash must be 32 hex digits, got", value);
      }
    } else {
      return usage_error("unknown argument", argv[i]);
    }
  }
  if (blob_path == nullptr) return usage_error("--blob FILE is required", nullptr);
  in_addr address{};
  if (inet_pton(AF_INET, host, &address) != 1) {
    return usage_error("--host must be a dotted IPv4 address, got", host);
  }

  std::vector<uint8_t> blob;
  if (!read_file(blob_path, &blob)) {
    std::fprintf(stderr, "nmcm-node: cannot read the blob %s: %s\n", blob_path,
                 std::strerror(errno));
    return kExitConfig;
  }
  nmcm::StageExpect expect{};
  std::memcpy(expect.model_hash, build.model_hash, sizeof expect.model_hash);
  expect.stage_index = build.stage_index;
  expect.stage_count = build.stage_count;
  const nmcm::Status loaded =
      g_stage.load(blob.data(), blob.size(), build.arena, build.arena_size, &expect);
  if (!loaded.ok()) {
    std::fprintf(stderr, "nmcm-node: blob %s refused (%s): %s", blob_path,
                 nmcm::status_code_name(loaded.code), loaded.message);
    if (loaded.subject != nullptr) std::fprintf(stderr, " [%s %d]", loaded.subject, loaded.index);
    std::fprintf(stderr, "; node %s is built for stage %u of %u of cluster %s\n", build.node,
                 build.stage_index, build.stage_count, build.cluster);
    return kExitConfig;
  }

  nmcm::runtime::NodeConfig& config = g_config;
  config.cluster = build.cluster;
  std::memcpy(config.model_hash, build.model_hash, sizeof config.model_hash);
  std::memcpy(config.firmware_hash, firmware_hash, sizeof config.firmware_hash);
  config.stage_index = build.stage_index;
  config.stage_count = build.stage_count;
  std::memcpy(config.listen.ip, &address.s_addr, 4);  // network order: the dotted bytes in order
  config.listen.port = static_cast<uint16_t>(port);
  config.has_downstream = build.has_downstream;
  std::memcpy(config.downstream.ip, build.downstream_ip, 4);
  config.downstream.port = build.downstream_port;
  config.arena = build.arena;
  config.arena_capacity = build.arena_capacity;
  config.log = log_line;

  char line[200];
  std::snprintf(line, sizeof line, "%s (%s), stage %u of %u of cluster %s: arena %u of %u bytes",
                build.node, build.mcu, build.stage_index, build.stage_count, build.cluster,
                build.arena_size, build.arena_capacity);
  log_line(line);

  static nmcm::runtime::Node node(g_stage, g_config, g_network, g_clock);
  const nmcm::Status started = node.start();
  if (!started.ok()) {
    std::fprintf(stderr, "nmcm-node: cannot start on %s:%ld: %s\n", host, port, started.message);
    return kExitConfig;
  }
  while (!node.stopped()) node.poll(100);
  log_line("stopped");
  return kExitOk;
}
