// Test harness (host only): a node whose network is W5500Network on the real W5500 driver, talking
// to a register-level emulated chip bridged to loopback, its event loop on a thread of its own.
// The runtime's test client (../../tests/node_client.h) plays the coordinator over POSIX TCP.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "nmcm/drivers/w5500/w5500.h"
#include "nmcm/net/payload.h"
#include "nmcm/runtime/node.h"
#include "nmcm/runtime/posix_network.h"
#include "nmcm/runtime/w5500_network.h"
#include "nmcm/stage.h"
#include "nmcm/tools/w5500_emulator.h"
#include "node_client.h"

namespace nmcm::runtime::test {

// The chip's side of the addresses, as on a board (the manifest's IPs and port).
constexpr uint16_t kChipPort = 5000;
constexpr uint8_t kChipIp[4] = {192, 168, 50, 11};
constexpr uint8_t kDownstreamIp[4] = {192, 168, 50, 12};

// The driver's clock and idle hook on the host.
uint32_t clock_ms();
void idle();

// A loopback port that was free a moment ago.
uint16_t free_port();

struct W5500NodeOptions {
  NodeTimeouts timeouts{};
  // Where the chip's CONNECT to kDownstreamIp:kChipPort + 1 lands on the host (stages but the
  // last); any other address has nobody there (the chip's ARP times out).
  uint16_t downstream_host_port = 0;
  // The loopback port the chip's LISTEN is bridged to (0: a free one).
  uint16_t host_port = 0;
  drivers::w5500::Config chip{};  // buffer sizes are set by W5500Network::plan_buffers
};

class W5500TestNode {
 public:
  explicit W5500TestNode(const std::vector<uint8_t>& blob, const W5500NodeOptions& options = {});
  ~W5500TestNode();
  W5500TestNode(const W5500TestNode&) = delete;
  W5500TestNode& operator=(const W5500TestNode&) = delete;

  bool started() const { return started_; }
  // The loopback port the emulator bridges the chip's LISTEN on kChipPort to.
  uint16_t port() const { return host_port_; }
  const Stage& stage() const { return stage_; }
  tools::W5500Emulator& emulator() { return *emulator_; }
  W5500Network& network() { return *network_; }
  bool wait_stopped(uint32_t timeout_ms);
  // Stops the loop thread (so that the test may look at the emulator undisturbed).
  void pause();

 private:
  std::vector<uint8_t> blob_;
  std::vector<uint8_t> arena_storage_;
  uint16_t host_port_ = 0;
  Stage stage_;
  NodeConfig config_;
  std::unique_ptr<tools::W5500Emulator> emulator_;
  std::unique_ptr<drivers::w5500::W5500> chip_;
  std::unique_ptr<W5500Network> network_;
  PosixClock clock_;
  std::unique_ptr<Node> node_;
  std::thread thread_;
  std::atomic<bool> run_{false};
  std::atomic<bool> stopped_{false};
  bool started_ = false;
};

// HELLO of a coordinator of `node`.
net::Hello coordinator_hello(const W5500TestNode& node, uint32_t max_payload = kClientLimit);
// A coordinator through the handshake with `node` (fails the test if refused).
std::unique_ptr<Client> connect_coordinator(const W5500TestNode& node,
                                            uint32_t max_payload = kClientLimit);
// STATUS over a fresh observer connection.
net::StatusReport status_of(const W5500TestNode& node);

}  // namespace nmcm::runtime::test
