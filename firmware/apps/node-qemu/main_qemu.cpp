// The node firmware under QEMU (`qemu` target, DESIGN.md "Targets"): the same ARM build of the
// core and the node runtime as on a board, on QEMU's MPS2 image of the node's core (mps2-an386
// for a Cortex-M4 node, mps2-an500 for a Cortex-M7 one). The stage is pinned at build time by the
// node's generated nmcm_stage.h, its blob embedded in the image (../node-board/stage_blob.S), its
// arena a static array checked against the MCU's capacity (../node/node_config.cpp): a stage that
// would not fit the chip does not build here either.
//
// The network is four CMSDK UARTs, each one connection at a time (nmcm/runtime/uart_network.h),
// which the runner on the host joins to TCP ports with QEMU socket chardevs
// (nmcm_deploy/runtime/qemu.py):
//
//   UART0  the coordinator        UART2  to the downstream neighbour (every stage but the last)
//   UART1  the upstream neighbour UART3  observers (`nmcm status`, `nmcm down`)
//
// The log is semihosting (QEMU's stderr); SHUTDOWN ends QEMU with status 0, a bad blob with 1.
// Instructions per layer and step go to the log as `profile` lines (profile.h).
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "nmcm/blob.h"
#include "nmcm/port/line.h"
#include "nmcm/port/port.h"
#include "nmcm/port/qemu_mps2.h"
#include "nmcm/runtime/node.h"
#include "nmcm/runtime/uart_network.h"
#include "nmcm/stage.h"
#include "node_app.h"
#include "profile.h"
#include "qemu_clock.h"
#include "qemu_node.h"

// stage_blob.S: the blob's bytes in the image and their count.
extern "C" const std::uint8_t nmcm_stage_blob[];
extern "C" const std::uint32_t nmcm_stage_blob_size;

namespace {

namespace qemu = nmcm::port::qemu;

// The UARTs by role; QEMU's serial port n is UART n (`-serial` in that order).
constexpr unsigned kCoordinatorUart = 0;
constexpr unsigned kUpstreamUart = 1;
constexpr unsigned kDownstreamUart = 2;
constexpr unsigned kObserverUart = 3;
// The longest the event loop waits when nothing happens.
constexpr std::uint32_t kPollMs = 100;

class QemuUart final : public nmcm::runtime::UartChannel {
 public:
  explicit QemuUart(unsigned index) : uart_(qemu::uart(index)) { uart_.open(); }
  std::size_t read_some(std::uint8_t* data, std::size_t n) override {
    return uart_.read_some(data, n);
  }
  std::size_t write_some(const std::uint8_t* data, std::size_t n) override {
    return uart_.write_some(data, n);
  }

 private:
  qemu::UartStream& uart_;
};

// Large objects live in static storage: their size is in the image's .bss, not on the stack.
nmcm::Stage g_stage;
nmcm::runtime::NodeConfig g_config;
nmcm::app::StepProfile g_profile;

void log_line(const char* line) { nmcm::port::log(line); }

// UartNetwork's idle: WFI until one of the node's UARTs has a byte (or the next SysTick). Under
// `-icount ...,sleep=on` (nmcm_deploy/runtime/qemu.py) QEMU then gives the host's CPU to the
// other nodes and to its own I/O thread, which moves the bytes one by one. Never inside a
// measured piece of work: the node waits only between frames.
void sleep_until_a_byte(void* clock) {
  auto* node_clock = static_cast<nmcm::app::QemuClock*>(clock);
  node_clock->sleep_begins();
  qemu::wait_for_uarts((1u << kCoordinatorUart) | (1u << kUpstreamUart) | (1u << kDownstreamUart) |
                       (1u << kObserverUart));
  node_clock->sleep_ends();
}

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

}  // namespace

int main() {
  nmcm::port::init();
  const nmcm::app::NodeBuild& build = nmcm::app::node_build();

  nmcm::port::Line<224> hello;
  hello.text("nmcm node ").text(build.node).text(" (").text(build.mcu).text(") on qemu-mps2, ");
  hello.text("stage ").dec(build.stage_index).text(" of ").dec(build.stage_count);
  hello.text(" of cluster ").text(build.cluster).text(": arena ").dec(build.arena_size);
  hello.text(" of ").dec(build.arena_capacity).text(" bytes, blob ").dec(nmcm_stage_blob_size);
  hello.text(" bytes");
  nmcm::port::log(hello.c_str());

  nmcm::StageExpect expect{};
  std::memcpy(expect.model_hash, build.model_hash, sizeof expect.model_hash);
  expect.stage_index = build.stage_index;
  expect.stage_count = build.stage_count;
  const nmcm::Status loaded =
      g_stage.load(nmcm_stage_blob, nmcm_stage_blob_size, build.arena, build.arena_size, &expect);
  if (!loaded.ok()) refuse_blob(loaded, build);

  static QemuUart coordinator(kCoordinatorUart);
  static QemuUart upstream(kUpstreamUart);
  static QemuUart downstream(kDownstreamUart);
  static QemuUart observer(kObserverUart);
  nmcm::runtime::UartChannel* inbound[3] = {&coordinator, &observer, &upstream};
  // Stage 0 has no upstream neighbour: its UART1 is not listened on.
  const std::uint32_t inbound_count = build.stage_index > 0 ? 3 : 2;
  static nmcm::app::QemuClock clock(build.clock_hz);
  static nmcm::runtime::UartNetwork network(inbound, inbound_count,
                                            build.has_downstream ? &downstream : nullptr, clock);
  network.set_idle(sleep_until_a_byte, &clock);

  nmcm::runtime::NodeConfig& config = g_config;
  config.cluster = build.cluster;
  std::memcpy(config.model_hash, build.model_hash, sizeof config.model_hash);
  parse_firmware_hash(config.firmware_hash);
  config.stage_index = build.stage_index;
  config.stage_count = build.stage_count;
  // The node's ports are on the host, where the runner bridges them to the UARTs; they appear
  // here only in the log.
  const std::uint8_t loopback[4] = {127, 0, 0, 1};
  std::memcpy(config.listen.ip, loopback, 4);
  config.listen.port = build.listen_port;
  config.has_downstream = build.has_downstream;
  std::memcpy(config.downstream.ip, build.downstream_ip, 4);
  config.downstream.port = build.downstream_port;
  config.arena = build.arena;
  config.arena_capacity = build.arena_capacity;
  config.log = log_line;
  // The number `nmcm apply` started this QEMU with (`arg=instance=N`), for HELLO_ACK.
  qemu::number_argument("instance", &config.instance);

  static nmcm::runtime::Node node(g_stage, g_config, network, clock);
  g_profile.attach(g_stage, node);
  const nmcm::Status started = node.start();
  if (!started.ok()) {
    nmcm::port::Line<160> line;
    nmcm::port::fatal(line.text("cannot start the node: ").text(started.message).c_str());
  }
  while (!node.stopped()) {
    node.poll(kPollMs);
    g_profile.flush();
  }
  nmcm::port::log("stopped");
  return 0;
}
