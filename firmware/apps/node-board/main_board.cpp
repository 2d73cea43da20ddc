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
#include "image_node.h"
#include "nmcm/port/line.h"
#include "nmcm/port/port.h"
#include "nmcm/runtime/node.h"
#include "nmcm/stage.h"
#include "node_app.h"
#include "node_start.h"

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

template <std::size_t N>
void dotted(nmcm::port::Line<N>& line, const std::uint8_t* ip) {
  line.dec(ip[0]).text(".").dec(ip[1]).text(".").dec(ip[2]).text(".").dec(ip[3]);
}

}  // namespace

int main() {
  nmcm::port::init();
  const nmcm::app::NodeBuild& build = nmcm::app::node_build();

  nmcm::app::log_image_hello(build, "");
  nmcm::app::load_embedded_stage(g_stage, build);

  const char* why = "";
  nmcm::runtime::NodeNetwork* network = nmcm::app::make_board_network(build, kLinkTimeoutMs, &why);
  if (network == nullptr) {
    nmcm::port::Line<160> line;
    nmcm::port::fatal(line.text("network: ").text(why).c_str());
  }

  nmcm::app::configure_node(build, log_line, &g_config);
  std::memcpy(g_config.firmware_hash, nmcm::app::firmware_hash(), sizeof g_config.firmware_hash);

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
  nmcm::app::start_image_node(node);
  while (!node.stopped()) node.poll(kPollMs);
  nmcm::port::log("stopped");
  return 0;
}
