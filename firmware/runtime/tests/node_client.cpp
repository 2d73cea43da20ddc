#include "node_client.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

namespace nmcm::runtime::test {
namespace {

void test_log(const char* line) {
  // The node's log, when a failing test needs it: NMCM_TEST_NODE_LOG=1.
  static const bool enabled = std::getenv("NMCM_TEST_NODE_LOG") != nullptr;
  if (enabled) std::fprintf(stderr, "  [node] %s\n", line);
}

class VectorRouter final : public net::PayloadRouter {
 public:
  explicit VectorRouter(std::vector<uint8_t>* out) : out_(out) {}
  net::Route route(const net::FrameDecoder& decoder) override {
    out_->resize(decoder.data_size());
    return net::Route::to(out_->data(), out_->size());
  }

 private:
  std::vector<uint8_t>* out_;
};

}  // namespace

std::vector<uint8_t> golden(const std::string& name) {
  std::ifstream in(std::string(NMCM_TEST_DATA_DIR) + "/" + name + ".blob", std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TestNode::TestNode(const std::vector<uint8_t>& blob, const NodeOptions& options) : blob_(blob) {
  // The arena the plan asks for, 16-byte aligned, poisoned so that reads of unset bytes show.
  arena_size_ = 1 << 20;
  arena_storage_.assign(arena_size_ + 16, 0xA5);
  const uintptr_t p = reinterpret_cast<uintptr_t>(arena_storage_.data());
  arena_ = arena_storage_.data() + ((16 - p % 16) % 16);
  const Status loaded = stage_.load(blob_.data(), blob_.size(), arena_, arena_size_, nullptr);
  EXPECT_TRUE(loaded.ok()) << loaded.message;
  if (!loaded.ok()) return;
  config_.cluster = kCluster;
  std::memcpy(config_.model_hash, stage_.layout().header.model_hash, net::kHashSize);
  for (uint32_t i = 0; i < net::kHashSize; ++i) config_.firmware_hash[i] = uint8_t(0xF0 + i);
  config_.stage_index = stage_.stage_index();
  config_.stage_count = stage_.stage_count();
  config_.listen = Endpoint{{127, 0, 0, 1}, options.listen_port};
  config_.has_downstream = !stage_.is_last();
  config_.downstream = Endpoint{{127, 0, 0, 1}, options.downstream_port};
  config_.instance = options.instance;
  config_.arena = arena_;
  config_.arena_capacity = static_cast<uint32_t>(arena_size_);
  config_.timeouts = options.timeouts;
  config_.log = test_log;
  node_ = std::make_unique<Node>(stage_, config_, network_, clock_);
  const Status status = node_->start();
  EXPECT_TRUE(status.ok()) << status.message;
  started_ = status.ok();
  if (started_) resume();
}

TestNode::~TestNode() { pause(); }

void TestNode::pause() {
  run_ = false;
  if (thread_.joinable()) thread_.join();
}

void TestNode::resume() {
  if (thread_.joinable() || !started_) return;
  run_ = true;
  thread_ = std::thread([this] {
    while (run_) {
      node_->poll(5);
      if (node_->stopped()) {
        stopped_ = true;
        return;
      }
    }
  });
}

std::vector<uint8_t> TestNode::arena() {
  const uint32_t used = stage_.layout().header.arena_size;
  return std::vector<uint8_t>(arena_, arena_ + used);
}

bool TestNode::wait_stopped(uint32_t timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!stopped_ && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return stopped_;
}

net::ErrorCode Received::error_code() const {
  net::ErrorHead head{};
  if (header.type != net::MsgType::kError || fixed.size() != net::ErrorHead::kSize ||
      !net::decode(fixed.data(), &head)) {
    return net::ErrorCode::kNone;
  }
  return head.code;
}

Client::Client() : sender_(&tcp_), decoder_(kClientLimit) {}

bool Client::connect(uint16_t port) {
  sender_.reset();
  decoder_.reset();
  return tcp_.connect("127.0.0.1", port, 2000) == net::IoStatus::kOk;
}

bool Client::accept(net::PosixListener& listener) {
  sender_.reset();
  decoder_.reset();
  return listener.accept(&tcp_, 3000) == net::IoStatus::kOk;
}

net::IoStatus Client::send(net::MsgType type, const net::FrameMeta& meta, const uint8_t* fixed,
                           uint32_t fixed_size, const void* data, uint32_t data_size) {
  return sender_.send(type, meta, fixed, fixed_size, data, data_size, 2000);
}

net::IoStatus Client::send_raw(const std::vector<uint8_t>& bytes) {
  return tcp_.send_all(bytes.data(), bytes.size(), 2000);
}

Received Client::receive(uint32_t timeout_ms) {
  Received r;
  VectorRouter router(&r.data);
  const net::ReceiveResult result =
      net::receive_frame(&tcp_, &decoder_, &router, timeout_ms, timeout_ms);
  r.io = result.io;
  r.error = result.error;
  if (r.ok()) {
    r.header = decoder_.header();
    r.fixed.assign(decoder_.fixed(), decoder_.fixed() + decoder_.fixed_size());
  }
  return r;
}

bool Client::closed_by_peer(uint32_t timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  uint8_t buf[4096];
  while (std::chrono::steady_clock::now() < deadline) {
    const net::IoResult r = tcp_.recv_some(buf, sizeof buf, 50);
    if (r.status == net::IoStatus::kClosed) return true;
    if (r.status == net::IoStatus::kError) return true;
  }
  return false;
}

Received Client::handshake(const net::Hello& hello) {
  if (send_message(net::MsgType::kHello, hello) != net::IoStatus::kOk) return Received{};
  return receive();
}

net::Hello coordinator_hello(const TestNode& node, uint32_t max_payload) {
  net::Hello h{};
  h.role = net::Role::kCoordinator;
  h.stage_index = node.stage().stage_index();
  h.stage_count = node.stage().stage_count();
  h.max_payload = max_payload;
  std::memcpy(h.model_hash, node.model_hash(), net::kHashSize);
  std::strcpy(h.cluster, kCluster);
  return h;
}

net::Hello observer_hello(const uint8_t* model_hash) {
  net::Hello h{};
  h.role = net::Role::kObserver;
  h.stage_index = net::kObserverStage;
  h.max_payload = kClientLimit;
  std::memcpy(h.model_hash, model_hash, net::kHashSize);
  std::strcpy(h.cluster, kCluster);
  return h;
}

std::unique_ptr<Client> connect_coordinator(const TestNode& node, uint32_t max_payload) {
  auto client = std::make_unique<Client>();
  EXPECT_TRUE(client->connect(node.port()));
  const Received ack = client->handshake(coordinator_hello(node, max_payload));
  EXPECT_TRUE(ack.ok() && ack.type() == net::MsgType::kHelloAck)
      << "handshake refused: " << ack.reason();
  return client;
}

net::StatusReport status_of(const TestNode& node) {
  net::StatusReport report{};
  Client client;
  EXPECT_TRUE(client.connect(node.port()));
  const Received ack = client.handshake(observer_hello(node.model_hash()));
  EXPECT_EQ(ack.type(), net::MsgType::kHelloAck);
  client.send(net::MsgType::kStatusRequest, net::kNoBatch, nullptr, 0);
  const Received status = client.receive();
  EXPECT_TRUE(status.ok() && status.type() == net::MsgType::kStatus) << status.reason();
  if (status.ok() && status.type() == net::MsgType::kStatus) {
    net::decode(status.fixed.data(), &report);
  }
  return report;
}

std::vector<float> pull_tensor(Client& client, uint16_t tensor, uint32_t count,
                               net::TensorKind kind) {
  std::vector<float> out(count);
  uint32_t offset = 0;
  while (offset < count) {
    client.send_message(net::MsgType::kGetWeights,
                        net::GetWeights{tensor, kind, offset, count - offset});
    const Received r = client.receive();
    net::WeightsHead head{};
    if (!r.ok() || r.type() != net::MsgType::kWeights || !net::decode(r.fixed.data(), &head)) {
      ADD_FAILURE() << "no WEIGHTS for tensor " << tensor << ": " << r.reason();
      return out;
    }
    EXPECT_EQ(head.offset, offset);
    EXPECT_EQ(head.total, count);
    std::memcpy(out.data() + offset, r.data.data(), size_t{head.count} * 4);
    offset += head.count;
  }
  return out;
}

}  // namespace nmcm::runtime::test
