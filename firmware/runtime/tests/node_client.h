// Test harness of the node runtime (host only: std containers and threads are fine here): a node
// on a loopback port, run by a thread, and a client that speaks to it with the C++ codec.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "nmcm/net/decoder.h"
#include "nmcm/net/frame_io.h"
#include "nmcm/net/payload.h"
#include "nmcm/net/posix_tcp.h"
#include "nmcm/runtime/node.h"
#include "nmcm/runtime/posix_network.h"
#include "nmcm/stage.h"

namespace nmcm::runtime::test {

constexpr char kCluster[] = "test-cluster";
constexpr uint32_t kClientLimit = 65536;

// A golden blob of firmware/tests/data (written by the model compiler).
std::vector<uint8_t> golden(const std::string& name);

struct NodeOptions {
  NodeTimeouts timeouts{};
  uint16_t listen_port = 0;      // 0: any free port
  uint16_t downstream_port = 0;  // for a stage that is not the last
  uint32_t instance = 0;         // what HELLO_ACK carries
};

// A node serving `blob` on 127.0.0.1, its event loop on a thread of its own.
class TestNode {
 public:
  explicit TestNode(const std::vector<uint8_t>& blob, const NodeOptions& options = {});
  ~TestNode();
  TestNode(const TestNode&) = delete;
  TestNode& operator=(const TestNode&) = delete;

  bool started() const { return started_; }
  uint16_t port() const { return network_.port(); }
  const uint8_t* model_hash() const { return stage_.layout().header.model_hash; }
  const Stage& stage() const { return stage_; }
  Stage& stage() { return stage_; }  // look at the arena only while paused

  // Stops the loop thread (sockets stay open) so that the test may look at the arena; resume()
  // runs it again.
  void pause();
  void resume();
  std::vector<uint8_t> arena();
  // True once the node has stopped after SHUTDOWN (waits up to timeout_ms).
  bool wait_stopped(uint32_t timeout_ms);

 private:
  std::vector<uint8_t> blob_;
  std::vector<uint8_t> arena_storage_;
  uint8_t* arena_ = nullptr;
  size_t arena_size_ = 0;
  Stage stage_;
  NodeConfig config_;
  PosixNetwork network_;
  PosixClock clock_;
  std::unique_ptr<Node> node_;
  std::thread thread_;
  std::atomic<bool> run_{false};
  std::atomic<bool> stopped_{false};
  bool started_ = false;
};

// A frame as the client received it; `error` is kNone for a good frame.
struct Received {
  net::IoStatus io = net::IoStatus::kError;
  net::ErrorCode error = net::ErrorCode::kNone;
  net::FrameHeader header{};
  std::vector<uint8_t> fixed;
  std::vector<uint8_t> data;

  bool ok() const { return io == net::IoStatus::kOk && error == net::ErrorCode::kNone; }
  net::MsgType type() const { return header.type; }
  // For an ERROR frame: its code (kNone otherwise).
  net::ErrorCode error_code() const;
  std::string reason() const { return std::string(data.begin(), data.end()); }
};

class Client {
 public:
  Client();
  bool connect(uint16_t port);
  // Plays a node's downstream neighbour: takes the connection the node opens.
  bool accept(net::PosixListener& listener);
  void close() { tcp_.close(); }

  net::IoStatus send(net::MsgType type, const net::FrameMeta& meta, const uint8_t* fixed,
                     uint32_t fixed_size, const void* data = nullptr, uint32_t data_size = 0);
  template <typename Fixed>
  net::IoStatus send_message(net::MsgType type, const Fixed& message,
                             const net::FrameMeta& meta = net::kNoBatch, const void* data = nullptr,
                             uint32_t data_size = 0) {
    uint8_t fixed[Fixed::kSize];
    net::encode(message, fixed);
    return send(type, meta, fixed, Fixed::kSize, data, data_size);
  }
  net::IoStatus send_raw(const std::vector<uint8_t>& bytes);
  // The next frame, waiting up to timeout_ms for it.
  Received receive(uint32_t timeout_ms = 3000);
  // True if the peer closes the connection within timeout_ms (any bytes before are read).
  bool closed_by_peer(uint32_t timeout_ms = 3000);

  // HELLO with `hello`, the answer (HELLO_ACK or ERROR).
  Received handshake(const net::Hello& hello);
  uint32_t next_sequence() const { return sender_.next_sequence(); }

 private:
  net::PosixTcp tcp_;
  net::FrameSender sender_;
  net::FrameDecoder decoder_;
};

// The identity a coordinator of `node` says in HELLO.
net::Hello coordinator_hello(const TestNode& node, uint32_t max_payload = kClientLimit);
// An observer of the node's cluster and model (`nmcm status`, `nmcm down`).
net::Hello observer_hello(const uint8_t* model_hash);

// A coordinator connection already through the handshake; fails the test if refused.
std::unique_ptr<Client> connect_coordinator(const TestNode& node,
                                            uint32_t max_payload = kClientLimit);

// Status of `node` over a fresh observer connection.
net::StatusReport status_of(const TestNode& node);

// A parameter tensor (kind 0) of `node` via GET_WEIGHTS on `client`.
std::vector<float> pull_tensor(Client& client, uint16_t tensor, uint32_t count,
                               net::TensorKind kind = net::TensorKind::kParameter);

}  // namespace nmcm::runtime::test
