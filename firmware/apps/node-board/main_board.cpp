// The node firmware of a Nucleo board (`hardware` target, DESIGN.md "Targets"): one stage of the
// pipeline, pinned at build time by the node's generated nmcm_stage.h, its stage blob embedded in
// flash (stage_blob.S) and its arena a static array in the MCU's arena region. It brings the board
// up, loads the blob into the arena, brings the W5500 up with the node's addresses and serves the
// node runtime (docs/protocol.md) until SHUTDOWN.
//
// Everything goes to the log (USART3, the ST-LINK's virtual COM port). A blob that fails its
// checks or a missing W5500 is fatal: one line says why, the red LED comes on, the core halts.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "board_clock.h"
#include "board_config.h"
#include "board_network.h"
#include "nmcm/blob.h"
#include "nmcm/port/line.h"
#include "nmcm/port/port.h"
#include "nmcm/runtime/node.h"
#include "nmcm/stage.h"
#include "node_app.h"

// stage_blob.S: the blob's bytes in flash and their count.
extern "C" const std::uint8_t nmcm_stage_blob[];
extern "C" const std::uint32_t nmcm_stage_blob_size;

namespace {

// Auto-negotiation takes a few seconds after the W5500's reset; the node starts anyway after
// this, and the runtime retries its downstream connection until it has a link.
constexpr std::uint32_t kLinkTimeoutMs = 5000;
// The longest the event loop sleeps when nothing happens.
constexpr std::uint32_t kPollMs = 100;

// Large objects live in static storage: their size is in the image's .bss, not on the stack.
nmcm::Stage g_stage;
nmcm::runtime::NodeConfig g_config;

void log_line(const char* line) { nmcm::port::log(line); }

[[noreturn]] void refuse_blob(const nmcm::Status& status, const nmcm::app::NodeBuild& build) {
  nmcm::port::Line<224> line;
  line.text("blob refused (").text(nmcm::status_code_name(status.code)).text("): ");
  line.text(status.message);
  if (status.subject != nullptr) {
    line.text(" [").text(status.subject).text(" ").sdec(status.index).text("]");
  }
  line.text("; built for stage ").dec(build.stage_index).text(" of ").dec(build.stage_count);
  nmcm::port::fatal(line.c_str());
}

template <std::size_t N>
void dotted(nmcm::port::Line<N>& line, const std::uint8_t* ip) {
  line.dec(ip[0]).text(".").dec(ip[1]).text(".").dec(ip[2]).text(".").dec(ip[3]);
}

}  // namespace

int main() {
  nmcm::port::init();
  const nmcm::app::NodeBuild& build = nmcm::app::node_build();

  nmcm::port::Line<200> hello;
  hello.text("nmcm node ").text(build.node).text(" (").text(build.mcu).text("), stage ");
  hello.dec(build.stage_index).text(" of ").dec(build.stage_count).text(" of cluster ");
  hello.text(build.cluster).text(": arena ").dec(build.arena_size).text(" of ");
  hello.dec(build.arena_capacity).text(" bytes, blob ").dec(nmcm_stage_blob_size).text(" bytes");
  nmcm::port::log(hello.c_str());

  nmcm::StageExpect expect{};
  std::memcpy(expect.model_hash, build.model_hash, sizeof expect.model_hash);
  expect.stage_index = build.stage_index;
  expect.stage_count = build.stage_count;
  const nmcm::Status loaded =
      g_stage.load(nmcm_stage_blob, nmcm_stage_blob_size, build.arena, build.arena_size, &expect);
  if (!loaded.ok()) refuse_blob(loaded, build);

  const char* why = "";
  nmcm::runtime::NodeNetwork* network = nmcm::app::make_board_network(build, kLinkTimeoutMs, &why);
  if (network == nullptr) {
    nmcm::port::Line<160> line;
    nmcm::port::fatal(line.text("network: ").text(why).c_str());
  }

  nmcm::runtime::NodeConfig& config = g_config;
  config.cluster = build.cluster;
  std::memcpy(config.model_hash, build.model_hash, sizeof config.model_hash);
  std::memcpy(config.firmware_hash, nmcm::app::firmware_hash(), sizeof config.firmware_hash);
  config.stage_index = build.stage_index;
  config.stage_count = build.stage_count;
  std::memcpy(config.listen.ip, build.ip, 4);
  config.listen.port = build.listen_port;
  config.has_downstream = build.has_downstream;
  std::memcpy(config.downstream.ip, build.downstream_ip, 4);
  config.downstream.port = build.downstream_port;
  config.arena = build.arena;
  config.arena_capacity = build.arena_capacity;
  config.log = log_line;

  nmcm::port::Line<120> where;
  where.text("listening on ");
  dotted(where, build.ip);
  where.text(":").dec(build.listen_port);
  if (build.has_downstream) {
    where.text(", downstream ");
    dotted(where, build.downstream_ip);
    where.text(":").dec(build.downstream_port);
  }
  nmcm::port::log(where.c_str());

  static nmcm::app::BoardClock clock(build.clock_hz);
  static nmcm::runtime::Node node(g_stage, g_config, *network, clock);
  const nmcm::Status started = node.start();
  if (!started.ok()) {
    nmcm::port::Line<160> line;
    nmcm::port::fatal(line.text("cannot start the node: ").text(started.message).c_str());
  }
  while (!node.stopped()) node.poll(kPollMs);
  nmcm::port::log("stopped");
  return 0;
}
