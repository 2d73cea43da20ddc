#include "w5500_node.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

namespace nmcm::runtime::test {
namespace {

void test_log(const char* line) {
  // The node's log, when a failing test needs it: NMCM_TEST_NODE_LOG=1.
  static const bool enabled = std::getenv("NMCM_TEST_NODE_LOG") != nullptr;
  if (enabled) std::fprintf(stderr, "  [w5500 node] %s\n", line);
}

}  // namespace

uint32_t clock_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint32_t>(static_cast<uint64_t>(ts.tv_sec) * 1000u +
                               static_cast<uint64_t>(ts.tv_nsec) / 1000000u);
}

void idle() {
  timespec pause{0, 100000L};  // 100 us: the emulator's threads and the test's get the CPU
  nanosleep(&pause, nullptr);
}

uint16_t free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  uint16_t port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  ::close(fd);
  return port;
}

W5500TestNode::W5500TestNode(const std::vector<uint8_t>& blob, const W5500NodeOptions& options)
    : blob_(blob) {
  arena_storage_.assign((1 << 20) + 16, 0xA5);
  const uintptr_t p = reinterpret_cast<uintptr_t>(arena_storage_.data());
  uint8_t* arena = arena_storage_.data() + ((16 - p % 16) % 16);
  const Status loaded = stage_.load(blob_.data(), blob_.size(), arena, 1 << 20, nullptr);
  EXPECT_TRUE(loaded.ok()) << loaded.message;
  if (!loaded.ok()) return;

  host_port_ = options.host_port != 0 ? options.host_port : free_port();
  tools::W5500Emulator::Options emu;
  const uint16_t host_port = host_port_;
  emu.listen_on = [host_port](uint16_t port) { return port == kChipPort ? host_port : port; };
  const uint16_t downstream = options.downstream_host_port;
  emu.connect_to = [downstream](const tools::W5500Emulator::Ip4& ip,
                                uint16_t port) -> std::optional<uint16_t> {
    if (std::memcmp(ip.data(), kDownstreamIp, 4) == 0 && port == kChipPort + 1 && downstream != 0)
      return downstream;
    return std::nullopt;
  };
  emulator_ = std::make_unique<tools::W5500Emulator>(emu);

  drivers::w5500::Config chip = options.chip;
  std::memcpy(chip.ip.octets, kChipIp, 4);
  chip.mac = drivers::w5500::Mac{{0x02, 0x4e, 0x4d, 0x00, 0x00, 0x01}};
  chip.subnet = drivers::w5500::Ip4{{255, 255, 255, 0}};
  chip.gateway = drivers::w5500::Ip4{{192, 168, 50, 1}};
  chip.idle = idle;
  const bool has_downstream = !stage_.is_last();
  W5500Network::plan_buffers(has_downstream, &chip);
  chip_ = std::make_unique<drivers::w5500::W5500>(*emulator_, clock_ms);
  const drivers::w5500::Status init = chip_->init(chip);
  EXPECT_EQ(init, drivers::w5500::Status::kOk) << drivers::w5500::status_name(init);
  if (init != drivers::w5500::Status::kOk) return;
  network_ = std::make_unique<W5500Network>(*chip_,
                                            W5500NetworkConfig{has_downstream, clock_ms, test_log});

  config_.cluster = kCluster;
  std::memcpy(config_.model_hash, stage_.layout().header.model_hash, net::kHashSize);
  for (uint32_t i = 0; i < net::kHashSize; ++i) config_.firmware_hash[i] = uint8_t(0xF0 + i);
  config_.stage_index = stage_.stage_index();
  config_.stage_count = stage_.stage_count();
  std::memcpy(config_.listen.ip, kChipIp, 4);
  config_.listen.port = kChipPort;
  config_.has_downstream = has_downstream;
  std::memcpy(config_.downstream.ip, kDownstreamIp, 4);
  config_.downstream.port = kChipPort + 1;
  config_.arena = arena;
  config_.arena_capacity = 1 << 20;
  config_.timeouts = options.timeouts;
  config_.log = test_log;
  node_ = std::make_unique<Node>(stage_, config_, *network_, clock_);
  const Status status = node_->start();
  EXPECT_TRUE(status.ok()) << status.message;
  started_ = status.ok();
  if (!started_) return;
  run_ = true;
  thread_ = std::thread([this] {
    while (run_) {
      node_->poll(20);
      if (node_->stopped()) {
        stopped_ = true;
        return;
      }
    }
  });
}

W5500TestNode::~W5500TestNode() {
  pause();
  // The node before the network, the network before the chip, the chip before the emulator.
  node_.reset();
  network_.reset();
  chip_.reset();
  emulator_.reset();
}

void W5500TestNode::pause() {
  run_ = false;
  if (thread_.joinable()) thread_.join();
}

bool W5500TestNode::wait_stopped(uint32_t timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!stopped_ && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return stopped_;
}

net::Hello coordinator_hello(const W5500TestNode& node, uint32_t max_payload) {
  net::Hello h{};
  h.role = net::Role::kCoordinator;
  h.stage_index = static_cast<uint16_t>(node.stage().stage_index());
  h.stage_count = static_cast<uint16_t>(node.stage().stage_count());
  h.max_payload = max_payload;
  std::memcpy(h.model_hash, node.stage().layout().header.model_hash, net::kHashSize);
  std::strcpy(h.cluster, kCluster);
  return h;
}

std::unique_ptr<Client> connect_coordinator(const W5500TestNode& node, uint32_t max_payload) {
  auto client = std::make_unique<Client>();
  EXPECT_TRUE(client->connect(node.port()));
  const Received ack = client->handshake(coordinator_hello(node, max_payload));
  EXPECT_TRUE(ack.ok() && ack.type() == net::MsgType::kHelloAck)
      << "handshake refused: " << ack.reason();
  return client;
}

net::StatusReport status_of(const W5500TestNode& node) {
  net::StatusReport report{};
  Client client;
  EXPECT_TRUE(client.connect(node.port()));
  const Received ack = client.handshake(observer_hello(node.stage().layout().header.model_hash));
  EXPECT_EQ(ack.type(), net::MsgType::kHelloAck) << ack.reason();
  client.send(net::MsgType::kStatusRequest, net::kNoBatch, nullptr, 0);
  const Received status = client.receive();
  EXPECT_TRUE(status.ok() && status.type() == net::MsgType::kStatus) << status.reason();
  if (status.ok() && status.type() == net::MsgType::kStatus) {
    net::decode(status.fixed.data(), &report);
  }
  return report;
}

}  // namespace nmcm::runtime::test
