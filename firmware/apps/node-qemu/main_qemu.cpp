// The node firmware under QEMU (`qemu` target, DESIGN.md "Targets"): the same ARM build of the
// core and the node runtime as on a board, on QEMU's MPS2 image of the node's core (mps2-an386
// for a Cortex-M4 node, mps2-an500 for a Cortex-M7 one). The stage is pinned at build time by the
// node's generated nmcm_stage.h, its blob embedded in the image (../node-board/stage_blob.S), its
// arena a static array checked against the MCU's capacity (../node/node_config.cpp): a stage that
// would not fit the chip does not build here either.
//
// The network is four CMSDK UARTs, each one connection at a time (nmcm/runtime/uart_network.h),
// which the runner on the host joins to TCP ports with QEMU socket chardevs
// (nmcm_deploy/targets/qemu.py):
//
//   UART0  the coordinator        UART2  to the downstream neighbour (every stage but the last)
//   UART1  the upstream neighbour UART3  observers (`nmcm status`, `nmcm down`)
//
// The log is semihosting (QEMU's stderr); SHUTDOWN ends QEMU with status 0, a bad blob with 1.
// Instructions per layer and step go to the log as `profile` lines (profile.h).
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "image_node.h"
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
// `-icount ...,sleep=on` (nmcm_deploy/targets/qemu.py) QEMU then gives the host's CPU to the
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

}  // namespace

int main() {
  nmcm::port::init();
  const nmcm::app::NodeBuild& build = nmcm::app::node_build();

  nmcm::app::log_image_hello(build, " on qemu-mps2");
  nmcm::app::load_embedded_stage(g_stage, build);

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

  nmcm::app::configure_node(build, log_line, &g_config);
  parse_firmware_hash(g_config.firmware_hash);
  // The node's ports are on the host, where the runner bridges them to the UARTs; they appear
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
