// The node runtime: one stage of the pipeline, speaking docs/protocol.md with its neighbours and
// the coordinator. Portable (no heap, exceptions, RTTI or std containers): the same code runs in a
// `sim` process over POSIX sockets and on a board over W5500 sockets or a UART stream; what
// differs is the NodeNetwork and NodeClock it is given.
//
//   Stage stage;  stage.load(blob, len, arena, capacity, &expect);   // main() decides on failure
//   Node node(stage, config, network, clock);
//   if (!node.start().ok()) ...;                                    // listen, reach downstream
//   while (!node.stopped()) node.poll(100);                          // until SHUTDOWN
//
// One thread, one event loop: poll() accepts connections, tries to reach the downstream
// neighbour, reads whatever bytes each connection has (never waiting on one peer while another
// has data), handles at most one whole frame per connection per turn, checks every timeout, and
// sleeps in NodeNetwork::wait() only when nothing moved. Frames are handled completely, forward
// or backward included, before the next one (docs/protocol.md, "Flow control").
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/loss.h"
#include "nmcm/net/decoder.h"
#include "nmcm/net/frame_io.h"
#include "nmcm/net/payload.h"
#include "nmcm/net/protocol.h"
#include "nmcm/net/transport.h"
#include "nmcm/stage.h"
#include "nmcm/status.h"

// Connections a node accepts at once: one per role (coordinator, upstream neighbour, observer)
// plus room for peers that have not said HELLO yet (a BUSY second coordinator, a port probe).
#ifndef NMCM_NODE_MAX_INBOUND
#define NMCM_NODE_MAX_INBOUND 5
#endif
// Micro-batches per batch a node keeps track of (one bit each, to refuse a repeat).
#ifndef NMCM_NODE_MAX_MICRO_BATCHES
#define NMCM_NODE_MAX_MICRO_BATCHES 1024
#endif

namespace nmcm::runtime {

constexpr uint32_t kMaxInbound = NMCM_NODE_MAX_INBOUND;
constexpr uint32_t kMaxMicroBatches = NMCM_NODE_MAX_MICRO_BATCHES;

class Text;  // src/text.h

struct Endpoint {
  uint8_t ip[4];
  uint16_t port;
};

// Sockets for the node, from fixed pools: POSIX TCP on the host (runtime/posix), W5500 hardware
// sockets on the boards. No call may block longer than its timeout.
class NodeNetwork {
 public:
  // Starts accepting connections on `endpoint`.
  virtual net::IoStatus listen(const Endpoint& endpoint) = 0;
  // A connection that arrived, open and owned by the caller until release(); nullptr if none is
  // waiting (never waits).
  virtual net::Transport* accept() = 0;
  // One attempt to connect within timeout_ms: kOk with *out open, kRefused if nobody listens.
  virtual net::IoStatus connect(const Endpoint& endpoint, uint32_t timeout_ms,
                                net::Transport** out) = 0;
  // Closes a transport from accept() or connect() and gives it back to the pool.
  virtual void release(net::Transport* transport) = 0;
  virtual void stop_listening() = 0;
  // Returns when a connection may have bytes or a peer is waiting to be accepted, or after
  // timeout_ms; returning early is always allowed.
  virtual void wait(uint32_t timeout_ms) = 0;

 protected:
  ~NodeNetwork() = default;
};

// The port's clock: milliseconds for timeouts, ticks for the STATUS time counters (host: ns;
// boards: core cycles; QEMU: instructions under -icount).
class NodeClock {
 public:
  virtual uint32_t millis() = 0;  // wraps after ~49 days; compared by subtraction
  virtual uint64_t ticks() = 0;
  virtual uint32_t tick_hz() = 0;

 protected:
  ~NodeClock() = default;
};

// One line of log text, no newline (stderr on the host, the USART on a board). May be null.
using LogSink = void (*)(const char* line);

// docs/protocol.md, "Timeouts on every wait" (the node's side of the table).
struct NodeTimeouts {
  uint32_t connect_ms = 10000;      // reaching the downstream neighbour, retrying ...
  uint32_t connect_retry_ms = 100;  // ... every this often while refused
  uint32_t hello_ms = 5000;         // HELLO after accept; HELLO_ACK after our HELLO
  uint32_t frame_ms = 2000;         // the next byte inside a frame
  uint32_t send_ms = 5000;          // a whole send
  uint32_t batch_ms = 60000;        // the next frame while a batch is open
};

// What the node was built for (generated nmcm_stage.h) and where it runs.
struct NodeConfig {
  const char* cluster = "";  // metadata.name
  uint8_t model_hash[net::kHashSize] = {};
  uint8_t firmware_hash[net::kHashSize] = {};
  uint16_t stage_index = 0;
  uint16_t stage_count = 1;
  Endpoint listen{};
  bool has_downstream = false;  // every stage but the last
  Endpoint downstream{};
  uint8_t* arena = nullptr;     // the arena the stage was loaded into
  uint32_t arena_capacity = 0;  // what the MCU gives the arena (STATUS arena_capacity)
  NodeTimeouts timeouts{};
  LogSink log = nullptr;
  uint32_t instance = 0;  // HELLO_ACK's `instance`: what it was started with (0 on a board)
};

class Node {
 public:
  // `stage` must stay loaded (into config.arena) for the node's lifetime.
  Node(Stage& stage, const NodeConfig& config, NodeNetwork& network, NodeClock& clock);
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Checks that the loaded stage is the one configured, listens, starts reaching downstream.
  Status start();
  // One turn of the event loop; waits at most max_wait_ms when there is nothing to do.
  void poll(uint32_t max_wait_ms);
  // After SHUTDOWN: every connection is closed and the node listens no more.
  bool stopped() const { return stopped_; }

  // What STATUS reports right now.
  net::StatusReport status() const;
  // The receive limit the node states in HELLO_ACK (docs/protocol.md, "The receive limit").
  uint32_t receive_limit() const { return limit_; }

 private:
  // Who is at the other end of a connection (docs/protocol.md, "Connections").
  enum class Peer : uint8_t { kPending, kCoordinator, kUpstream, kObserver, kDownstream };
  // Where the data part of the frame being received goes.
  enum class Sink : uint8_t { kNone, kDiscard, kInput, kLabels, kGradIn, kWeights, kReason };
  enum class Link : uint8_t { kIdle, kConnecting, kHandshake, kReady };
  enum Ticks : uint8_t { kCompute = 0, kComm = 1, kIdle = 2 };

  struct Connection {
    net::Transport* transport = nullptr;
    net::FrameDecoder decoder{net::kMinPayloadLimit};
    net::FrameSender sender{nullptr};
    Peer peer = Peer::kPending;
    uint32_t opened_ms = 0;
    uint32_t last_byte_ms = 0;
    uint32_t peer_limit = net::kMinPayloadLimit;  // the peer's max_payload
    bool frame_ready = false;  // a whole frame waits: for compute to be free (grad_in_busy_),
                               // or read by on_hello() for pump() to handle
    Sink sink = Sink::kNone;
    uint8_t sink_slot = 0;
    uint8_t sink_kind = 0;  // SET_WEIGHTS: TensorKind of the chunk being written
    // A refusal decided when the data part was routed, sent once the frame CRC has been checked
    // (the receiver's own checks come after check 11).
    net::ErrorCode refusal = net::ErrorCode::kNone;
    uint32_t refusal_detail = 0;
    // The text of the frame being received: the reason of an ERROR from the peer (sink kReason),
    // or that of the refusal decided for it. Both live from route() to dispatch() of one frame,
    // and a frame is one or the other, so they share the buffer.
    char text[net::kMaxErrorText + 1] = {};
    bool open() const { return transport != nullptr; }
  };

  // A micro-batch between its forward and its backward (docs/protocol.md, "Flow control").
  struct Slot {
    bool used;
    bool has_input;
    bool has_labels;
    bool forwarded;
    bool output_pending;  // forward done, ACTIVATIONS not yet sent (downstream not ready)
    uint16_t micro_batch;
    uint16_t samples;
    uint32_t inputs_sequence;  // first stage: the INPUTS frame its ACK names
  };

  struct Batch {
    bool open;
    bool eval;
    uint32_t id;
    uint16_t size;           // B
    uint16_t micro_batches;  // M
    uint32_t epoch;
    LossKind loss;
    uint16_t completed;
    uint32_t samples;
    float loss_sum;
    uint8_t done[kMaxMicroBatches / 8];
  };

  // node.cpp: the loop, connections, sending, refusing, timeouts.
  bool accept_new();
  bool pump(Connection& c);
  bool read_frame(Connection& c);
  net::DecodeEvent route(Connection& c);
  // Reads the data part only to check its CRC, then refuses the frame (the receiver's own checks
  // come after check 11 of docs/protocol.md).
  net::DecodeEvent discard(Connection& c, net::ErrorCode code, uint32_t detail, const char* reason);
  void dispatch(Connection& c);
  void on_stream_end(Connection& c, net::IoStatus io);
  void on_decode_error(Connection& c);
  void check_timeouts();
  void check_timeout(Connection& c, uint32_t now_ms);
  bool send(Connection& c, net::MsgType type, const net::FrameMeta& meta, const uint8_t* fixed,
            uint32_t fixed_size, const void* data, uint32_t data_size);
  bool send_ack(Connection& c, const net::FrameHeader& acked);
  // ERROR and close, counted in frames_rejected.
  void refuse(Connection& c, net::ErrorCode code, uint32_t detail, const char* reason,
              const net::FrameMeta& meta);
  void error_close(Connection& c, net::ErrorCode code, uint32_t detail, const char* reason,
                   const net::FrameMeta& meta);
  void close(Connection& c, const char* why);
  void stop();
  Connection* holder(Peer role);
  const char* peer_name(const Connection& c) const;
  static net::FrameMeta meta_of(const net::FrameHeader& h);
  void log(const char* line) const;
  void charge(Ticks kind);
  uint32_t now() { return clock_.millis(); }

  // handshake.cpp: HELLO / HELLO_ACK and the link to the downstream neighbour.
  void on_hello(Connection& c);
  void on_hello_ack(Connection& c);
  void fill_identity(net::Hello* h, net::Role role) const;
  static constexpr uint16_t kAnyStage = 0xFFFF;
  net::ErrorCode check_identity(const net::Hello& h, uint16_t want_stage, uint32_t* detail,
                                Text* why) const;
  void reach_downstream();
  void service_downstream();
  void downstream_lost();

  // batch.cpp: batches, slots, tensors in and out, the optimizer step.
  net::DecodeEvent route_tensor(Connection& c);
  bool check_batch_frame(Connection& c, const net::FrameHeader& h);
  void on_batch_begin(Connection& c);
  void on_tensor(Connection& c);
  void on_step(Connection& c);
  void finish_last(uint32_t slot);
  void backward_and_send(uint32_t slot);
  void complete(uint32_t slot);
  void flush_outputs();
  void drop_batch(const char* why);
  void executor_failed(const Status& status);
  // False (and the job stopped: NON_FINITE to the coordinator, weights invalid) if data[0..n)
  // holds a NaN or infinity; `what` names the values for the reason.
  bool check_finite(const float* data, uint32_t n, const char* what, uint16_t micro_batch);
  bool batch_needs_neighbours() const;
  int32_t find_slot(uint16_t micro_batch) const;
  int32_t take_slot(uint16_t micro_batch, uint16_t samples);
  net::FrameMeta batch_meta(uint16_t micro_batch) const;
  bool is_done(uint16_t micro_batch) const;

  // weights.cpp: GET_WEIGHTS, SET_WEIGHTS and the weights' validity.
  net::DecodeEvent route_set_weights(Connection& c);
  void on_set_weights(Connection& c);
  void on_get_weights(Connection& c);
  float* tensor_data(uint32_t tensor, net::TensorKind kind);
  void invalidate_weights(uint8_t kind);
  bool weights_valid() const;

  // status.cpp
  void on_status_request(Connection& c);
  net::NodeState state() const;

  Stage& stage_;
  const NodeConfig& config_;
  NodeNetwork& network_;
  NodeClock& clock_;
  uint32_t limit_ = net::kMinPayloadLimit;

  Connection inbound_[kMaxInbound];
  Connection down_;
  Link link_ = Link::kIdle;
  uint32_t link_window_ms_ = 0;  // start of the current attempt to reach downstream
  uint32_t link_next_try_ms_ = 0;
  // A GRADIENTS data part is arriving in Stage::grad_in(), a transient buffer the plan may share
  // with forward's: frames that run forward or the loss wait until it has landed.
  bool grad_in_busy_ = false;

  Slot slots_[kMaxSlots] = {};
  Batch batch_{};
  uint32_t last_batch_id_ = 0;
  uint32_t dropped_batch_id_ = 0;
  const char* drop_reason_ = "";
  uint32_t last_frame_ms_ = 0;

  // Per tensor and kind (parameter, momentum): elements set since the weights became invalid.
  uint32_t valid_upto_[2][kMaxTensors] = {};
  bool weights_invalid_ = false;
  bool failed_ = false;  // an executor error

  uint32_t steps_ = 0;
  float last_loss_ = 0.0f;
  bool has_loss_ = false;
  uint64_t ticks_[3] = {};
  uint64_t tick_mark_ = 0;
  uint64_t bytes_sent_ = 0;
  uint64_t bytes_received_ = 0;
  uint32_t frames_sent_ = 0;
  uint32_t frames_received_ = 0;
  uint32_t frames_rejected_ = 0;
  uint32_t started_ms_ = 0;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace nmcm::runtime
