// nmcm-node: a `sim` node, one process per node (DESIGN.md, "Targets"). It loads its stage blob
// into the static arena its build pinned, serves the node runtime over POSIX TCP — or through the
// real W5500 driver and a register-level emulated W5500 bridged to loopback — and exits after
// SHUTDOWN. With --pace, every piece of work and every frame takes the cost model's time
// (pace.h).
//
//   nmcm-node --blob FILE [--host 127.0.0.1] [--port N] [--firmware-hash HEX32]
//             [--network posix|w5500-emulator] [--instance N] [--pace FILE]
//
// Exit codes: 0 after SHUTDOWN; 1 a bad blob or configuration (one line on stderr says why);
// 2 a usage error. Logs one line per event to stderr.
#include <arpa/inet.h>
#include <time.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nmcm/blob.h"
#include "nmcm/drivers/w5500/w5500.h"
#include "nmcm/net/protocol.h"
#include "nmcm/runtime/node.h"
#include "nmcm/runtime/posix_network.h"
#include "nmcm/runtime/w5500_network.h"
#include "nmcm/stage.h"
#include "nmcm/tools/w5500_emulator.h"
#include "node_app.h"
#include "node_start.h"
#include "pace.h"

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
      "                 [--network posix|w5500-emulator] [--instance N] [--pace FILE]\n"
      "  --blob FILE            the stage blob this node was built for (required)\n"
      "  --host IPV4            address to listen on (default 127.0.0.1)\n"
      "  --port N               port to listen on (default: the build's, %u)\n"
      "  --firmware-hash HEX32  build id reported in HELLO_ACK and STATUS (32 hex digits)\n"
      "  --network NAME         posix: host TCP sockets (default); w5500-emulator: the W5500\n"
      "                         driver on an emulated chip bridged to 127.0.0.1\n"
      "  --instance N           the number HELLO_ACK carries (0..4294967295; default 0), by\n"
      "                         which whoever started the node recognises it\n"
      "  --pace FILE            take the modelled time of this pace table (written by nmcm for\n"
      "                         spec.sim.pace: model) for every piece of work and frame\n",
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
nmcm::runtime::PosixNetwork g_posix_network;
nmcm::runtime::PosixClock g_clock;
nmcm::runtime::NodeConfig g_config;

// --- --network w5500-emulator ---------------------------------------------------------------
// The chip is programmed as on a board (the manifest's IP and MAC, listening on the build's port,
// connecting to the build's downstream address); the emulator bridges its sockets to loopback:
// LISTEN on the build's port binds 127.0.0.1:--port (the port nmcm and the upstream neighbour
// connect to), CONNECT to ip:P reaches 127.0.0.1:P (in sim the header's downstream address is
// already the neighbour's loopback port). Nothing but loopback is contacted.

uint32_t host_millis() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint32_t>(static_cast<uint64_t>(ts.tv_sec) * 1000u +
                               static_cast<uint64_t>(ts.tv_nsec) / 1000000u);
}

// The driver's idle hook: between two looks at the chip, give the CPU away briefly (a board would
// spin or wait for an interrupt). Short enough for a full TX buffer to drain at emulated speed.
void host_idle() {
  timespec pause{0, 200000L};  // 200 us
  nanosleep(&pause, nullptr);
}

// The node's idle wait between looks at its sockets (W5500Network::wait): the emulator moves
// data every millisecond on its own, so looking more often than that only burns CPU.
void host_wait_idle() {
  timespec pause{0, 1000000L};  // 1 ms
  nanosleep(&pause, nullptr);
}

struct EmulatedChip {
  std::unique_ptr<nmcm::tools::W5500Emulator> emulator;
  std::unique_ptr<nmcm::drivers::w5500::W5500> chip;
  std::unique_ptr<nmcm::runtime::W5500Network> network;
};
EmulatedChip g_emulated;

bool all_zero(const uint8_t* bytes, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (bytes[i] != 0) return false;
  }
  return true;
}

// The frames that cross this stage's boundaries with a neighbour, against what the W5500 buffers
// absorb while both neighbours send at once (runtime/w5500/README.md, "One thread and full
// buffers"). The emulator's loopback sockets buffer more than a chip's, so in sim this can only
// be reported: on a board a pipelined schedule with such a frame stalls until send_ms.
void check_pipelined_frames(const nmcm::Stage& stage, const nmcm::app::NodeBuild& build) {
  using nmcm::runtime::W5500Network;
  if (stage.slots() < 2) return;  // one micro-batch in flight: neighbours never send at once
  const uint32_t overhead = nmcm::net::kHeaderSize + 8 + nmcm::net::kCrcSize;
  const bool is_last = build.stage_index + 1 == build.stage_count;
  struct Boundary {
    bool exists;
    uint32_t bytes;
    uint32_t limit;
    const char* side;
  };
  const Boundary boundaries[2] = {
      {build.stage_index > 0, stage.micro_batch() * stage.input_floats() * 4 + overhead,
       W5500Network::pipelined_frame_limit(is_last), "upstream"},
      {build.has_downstream, stage.micro_batch() * stage.output_floats() * 4 + overhead,
       W5500Network::pipelined_frame_limit(build.stage_index + 2 == build.stage_count),
       "downstream"},
  };
  for (const Boundary& b : boundaries) {
    if (!b.exists || b.bytes <= b.limit) continue;
    char line[300];
    std::snprintf(line, sizeof line,
                  "warning: %s frames of %u bytes exceed the %u bytes the W5500 buffers take "
                  "while both neighbours send: on a board, pipelined micro-batches can stall "
                  "(use more micro-batches or a sequential schedule)",
                  b.side, b.bytes, b.limit);
    log_line(line);
  }
}

// The emulated chip and the node's network on it; nullptr (after a line on stderr) on failure.
nmcm::runtime::NodeNetwork* emulated_network(const nmcm::app::NodeBuild& build,
                                             uint16_t host_port) {
  namespace w5500 = nmcm::drivers::w5500;
  nmcm::tools::W5500Emulator::Options options;
  const uint16_t chip_port = build.listen_port;
  options.listen_on = [chip_port, host_port](uint16_t port) {
    return port == chip_port ? host_port : port;
  };
  options.connect_to = [](const nmcm::tools::W5500Emulator::Ip4&,
                          uint16_t port) -> std::optional<uint16_t> { return port; };
  g_emulated.emulator = std::make_unique<nmcm::tools::W5500Emulator>(options);

  w5500::Config config{};
  std::memcpy(config.ip.octets, build.ip, 4);
  std::memcpy(config.mac.octets, build.mac, 6);
  std::memcpy(config.gateway.octets, build.gateway, 4);
  std::memcpy(config.subnet.octets, build.subnet_mask, 4);
  if (all_zero(build.mac, 6)) {
    // No w5500 in the manifest (sim needs none): a locally administered MAC of this stage.
    const uint8_t stage_hi = static_cast<uint8_t>(build.stage_index >> 8);
    const uint8_t stage_lo = static_cast<uint8_t>(build.stage_index);
    const uint8_t mac[6] = {0x02, 0x4e, 0x4d, 0xff, stage_hi, stage_lo};
    std::memcpy(config.mac.octets, mac, 6);
  }
  // Loopback peers answer a FIN at once: a peer that does not should stall the loop briefly.
  config.close_timeout_ms = 250;
  config.idle = host_idle;
  nmcm::runtime::W5500Network::plan_buffers(build.has_downstream, &config);
  g_emulated.chip = std::make_unique<w5500::W5500>(*g_emulated.emulator, host_millis);
  const w5500::Status status = g_emulated.chip->init(config);
  if (status != w5500::Status::kOk) {
    std::fprintf(stderr, "nmcm-node: the emulated W5500 did not come up: %s\n",
                 w5500::status_name(status));
    return nullptr;
  }
  g_emulated.network = std::make_unique<nmcm::runtime::W5500Network>(
      *g_emulated.chip, nmcm::runtime::W5500NetworkConfig{build.has_downstream, host_millis,
                                                          log_line, host_wait_idle});
  char line[200];
  std::snprintf(line, sizeof line,
                "network: W5500 driver on an emulated chip %u.%u.%u.%u, port %u bridged to "
                "127.0.0.1:%u; sockets: downstream %u KB, 4 inbound x %u KB",
                build.ip[0], build.ip[1], build.ip[2], build.ip[3], chip_port, host_port,
                build.has_downstream ? nmcm::runtime::W5500Network::kDownstreamKb : 0,
                build.has_downstream ? nmcm::runtime::W5500Network::kInboundKb
                                     : nmcm::runtime::W5500Network::kLastStageInboundKb);
  log_line(line);
  return g_emulated.network.get();
}

// --pace FILE: the stage's work and the network's frames take the table's time.
std::unique_ptr<nmcm::app::Pacer> g_pacer;
std::unique_ptr<nmcm::app::PacedNetwork> g_paced_network;

nmcm::runtime::NodeNetwork* paced_network(const char* path, nmcm::runtime::NodeNetwork* inner) {
  std::vector<uint8_t> text;
  if (!read_file(path, &text)) {
    std::fprintf(stderr, "nmcm-node: cannot read the pace table %s: %s\n", path,
                 std::strerror(errno));
    return nullptr;
  }
  text.push_back('\0');
  nmcm::app::PaceTable table;
  char error[160];
  if (!nmcm::app::parse_pace_table(reinterpret_cast<const char*>(text.data()), &table, error,
                                   sizeof error)) {
    std::fprintf(stderr, "nmcm-node: pace table %s: %s\n", path, error);
    return nullptr;
  }
  if (table.layers != g_stage.layer_count()) {
    std::fprintf(stderr, "nmcm-node: pace table %s is for %u layers, the stage has %u\n", path,
                 table.layers, static_cast<unsigned>(g_stage.layer_count()));
    return nullptr;
  }
  g_pacer = std::make_unique<nmcm::app::Pacer>(table);
  g_pacer->attach(g_stage);
  g_paced_network = std::make_unique<nmcm::app::PacedNetwork>(*inner, *g_pacer);
  char line[160];
  std::snprintf(line, sizeof line,
                "paced by the cost model (%s): %g host seconds per modelled second", path,
                table.scale);
  log_line(line);
  return g_paced_network.get();
}

}  // namespace

int main(int argc, char** argv) {
  clock_gettime(CLOCK_MONOTONIC, &g_start);
  const nmcm::app::NodeBuild& build = nmcm::app::node_build();
  g_node = build.node;

  const char* blob_path = nullptr;
  const char* host = "127.0.0.1";
  long port = build.listen_port;
  uint8_t firmware_hash[16] = {};
  unsigned long instance = 0;
  bool emulated = false;
  const char* pace_path = nullptr;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      usage(stdout);
      return kExitOk;
    }
    const bool has_value = i + 1 < argc;
    if (arg == "--blob" || arg == "--host" || arg == "--port" || arg == "--firmware-hash" ||
        arg == "--network" || arg == "--instance" || arg == "--pace") {
      if (!has_value) return usage_error("missing value for", argv[i]);
      const char* value = argv[++i];
      if (arg == "--network") {
        const std::string network = value;
        if (network != "posix" && network != "w5500-emulator") {
          return usage_error("--network must be posix or w5500-emulator, got", value);
        }
        emulated = network == "w5500-emulator";
      } else if (arg == "--instance") {
        char* end = nullptr;
        errno = 0;
        instance = std::strtoul(value, &end, 10);
        if (end == value || *end != '\0' || errno != 0 || instance > 0xFFFFFFFFul ||
            value[0] == '-') {
          return usage_error("--instance must be 0..4294967295, got", value);
        }
      } else if (arg == "--blob") {
        blob_path = value;
      } else if (arg == "--pace") {
        pace_path = value;
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
  if (emulated && std::strcmp(host, "127.0.0.1") != 0) {
    return usage_error("the emulated W5500 bridges to 127.0.0.1 only, not", host);
  }

  std::vector<uint8_t> blob;
  if (!read_file(blob_path, &blob)) {
    std::fprintf(stderr, "nmcm-node: cannot read the blob %s: %s\n", blob_path,
                 std::strerror(errno));
    return kExitConfig;
  }
  const nmcm::Status loaded = nmcm::app::load_stage(g_stage, build, blob.data(), blob.size());
  if (!loaded.ok()) {
    std::fprintf(stderr, "nmcm-node: blob %s refused (%s): %s", blob_path,
                 nmcm::status_code_name(loaded.code), loaded.message);
    if (loaded.subject != nullptr) std::fprintf(stderr, " [%s %d]", loaded.subject, loaded.index);
    std::fprintf(stderr, "; node %s is built for stage %u of %u of cluster %s\n", build.node,
                 build.stage_index, build.stage_count, build.cluster);
    return kExitConfig;
  }

  nmcm::runtime::NodeConfig& config = g_config;
  nmcm::app::configure_node(build, log_line, &config);
  std::memcpy(config.firmware_hash, firmware_hash, sizeof config.firmware_hash);
  config.instance = static_cast<uint32_t>(instance);
  nmcm::runtime::NodeNetwork* network = &g_posix_network;
  if (emulated) {
    // The chip's view: its own address and the build's port (bridged to --port on loopback).
    network = emulated_network(build, static_cast<uint16_t>(port));
    if (network == nullptr) return kExitConfig;
    check_pipelined_frames(g_stage, build);
  } else {
    std::memcpy(config.listen.ip, &address.s_addr, 4);  // network order: the dotted bytes in order
    config.listen.port = static_cast<uint16_t>(port);
  }

  char line[200];
  std::snprintf(line, sizeof line, "%s (%s), stage %u of %u of cluster %s: arena %u of %u bytes",
                build.node, build.mcu, build.stage_index, build.stage_count, build.cluster,
                build.arena_size, build.arena_capacity);
  log_line(line);

  if (pace_path != nullptr) {
    network = paced_network(pace_path, network);
    if (network == nullptr) return kExitConfig;
  }

  static nmcm::runtime::Node node(g_stage, g_config, *network, g_clock);
  const nmcm::Status started = node.start();
  if (!started.ok()) {
    std::fprintf(stderr, "nmcm-node: cannot start on %s:%ld: %s\n", host, port, started.message);
    return kExitConfig;
  }
  while (!node.stopped()) node.poll(100);
  if (g_pacer) {
    const nmcm::app::Pacer::Totals& t = g_pacer->totals();
    std::snprintf(line, sizeof line,
                  "paced %llu pieces of work and frames (%llu sent, %llu received): %.3f s "
                  "modelled",
                  static_cast<unsigned long long>(t.pieces),
                  static_cast<unsigned long long>(t.frames_sent),
                  static_cast<unsigned long long>(t.frames_received), t.modelled_s);
    log_line(line);
  }
  log_line("stopped");
  return kExitOk;
}
