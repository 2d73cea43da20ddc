// The node firmware under QEMU (`qemu` target, DESIGN.md "Targets"): the same ARM build of the
// core and the node runtime as on a board, on QEMU's MPS2 image of the node's core (mps2-an386
// for a Cortex-M4 node, mps2-an500 for a Cortex-M7 one). The stage is pinned at build time by the
// node's generated nmcm_stage.h, its blob embedded in the image (../node-board/stage_blob.S), its
// arena a static array checked against the MCU's capacity (../node/node_config.cpp): a stage that
// would not fit the chip does not build here either.
//
// The network is four byte streams, each one connection at a time (nmcm/runtime/uart_network.h),
// carried by the host link (nmcm/port/host_link.h): two named pipes that the node's relay on the
// host joins to TCP ports (nmcm_deploy/targets/qemu_relay.py):
//
//   stream 0  the coordinator        stream 2  to the downstream neighbour (all stages but the
//   last) stream 1  the upstream neighbour stream 3  observers (`nmcm status`, `nmcm down`)
//
// The log is semihosting (QEMU's stderr); SHUTDOWN ends QEMU with status 0, a bad blob with 1.
// Instructions per layer and step go to the log as `profile` lines (profile.h).
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "image_node.h"
#include "nmcm/port/host_link.h"
#include "nmcm/port/line.h"
#include "nmcm/port/port.h"
#include "nmcm/port/qemu_mps2.h"
#include "nmcm/runtime/node.h"
#include "nmcm/runtime/uart_network.h"
#include "nmcm/stage.h"
#include "node_app.h"
#include "node_start.h"
#include "profile.h"
#include "qemu_clock.h"
#include "qemu_node.h"

namespace {

namespace qemu = nmcm::port::qemu;

// The streams by role (the relay's order).
constexpr unsigned kCoordinatorStream = 0;
constexpr unsigned kUpstreamStream = 1;
constexpr unsigned kDownstreamStream = 2;
constexpr unsigned kObserverStream = 3;
// The longest the event loop waits when nothing happens.
constexpr std::uint32_t kPollMs = 100;
// How long one idle turn waits for the relay: it answers at once when a byte comes.
constexpr std::uint32_t kIdleWaitMs = 20;

// One stream of the host link as the UartChannel that UartNetwork reads and writes.
class HostChannel final : public nmcm::runtime::UartChannel {
 public:
  HostChannel(qemu::HostLink& link, unsigned stream) : link_(link), stream_(stream) {}
  std::size_t read_some(std::uint8_t* data, std::size_t n) override {
    return link_.read_some(stream_, data, n);
  }
  std::size_t write_some(const std::uint8_t* data, std::size_t n) override {
    return link_.write_some(stream_, data, n);
  }

 private:
  qemu::HostLink& link_;
  unsigned stream_;
};

// Large objects live in static storage: their size is in the image's .bss, not on the stack.
nmcm::Stage g_stage;
nmcm::runtime::NodeConfig g_config;
nmcm::app::StepProfile g_profile;
qemu::HostLink g_link;

void log_line(const char* line) { nmcm::port::log(line); }

// UartNetwork's idle: wait in the relay until a byte comes for any stream. QEMU's core stops in
// the semihosting read meanwhile, leaving the host's CPU to the other nodes, and no instructions
// pass. Never inside a measured piece of work: the node waits only between frames.
void wait_for_a_byte(void*) { g_link.wait(kIdleWaitMs); }

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

void parse_firmware_hash(std::uint8_t (&out)[16]) {
  const char* hex = nmcm::app::firmware_hash_hex();
  for (std::size_t i = 0; i < 16; ++i) {
    const int high = hex_digit(hex[2 * i]);
    const int low = hex_digit(hex[2 * i + 1]);
    if (high < 0 || low < 0) nmcm::port::fatal("NMCM_FIRMWARE_HASH is not 32 hex digits");
    out[i] = static_cast<std::uint8_t>(high * 16 + low);
  }
}

}  // namespace

int main() {
  nmcm::port::init();
  const nmcm::app::NodeBuild& build = nmcm::app::node_build();

  nmcm::app::log_image_hello(build, " on qemu-mps2");
  nmcm::app::load_embedded_stage(g_stage, build);

  // The relay's folder: `arg=link=DIR` on QEMU's semihosting command line.
  static char link_dir[160];
  if (!qemu::text_argument("link", link_dir, sizeof link_dir)) {
    nmcm::port::fatal("no link=DIR argument: start the node through its relay");
  }
  g_link.open(link_dir);
  static HostChannel coordinator(g_link, kCoordinatorStream);
  static HostChannel upstream(g_link, kUpstreamStream);
  static HostChannel downstream(g_link, kDownstreamStream);
  static HostChannel observer(g_link, kObserverStream);
  nmcm::runtime::UartChannel* inbound[3] = {&coordinator, &observer, &upstream};
  // Stage 0 has no upstream neighbour: its stream 1 is not listened on.
  const std::uint32_t inbound_count = build.stage_index > 0 ? 3 : 2;
  static nmcm::app::QemuClock clock(build.clock_hz);
  static nmcm::runtime::UartNetwork network(inbound, inbound_count,
                                            build.has_downstream ? &downstream : nullptr, clock);
  network.set_idle(wait_for_a_byte, nullptr);

  nmcm::app::configure_node(build, log_line, &g_config);
  parse_firmware_hash(g_config.firmware_hash);
  // The node's ports are on the host, where its relay joins them to the streams; they appear
  // here only in the log.
  const std::uint8_t loopback[4] = {127, 0, 0, 1};
  std::memcpy(g_config.listen.ip, loopback, 4);
  // The number `nmcm apply` started this QEMU with (`arg=instance=N`), for HELLO_ACK.
  qemu::number_argument("instance", &g_config.instance);

  static nmcm::runtime::Node node(g_stage, g_config, network, clock);
  g_profile.attach(g_stage, node);
  nmcm::app::start_image_node(node);
  while (!node.stopped()) {
    node.poll(kPollMs);
    g_profile.flush();
  }
  nmcm::port::log("stopped");
  return 0;
}
