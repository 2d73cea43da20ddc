// The event loop: connections, reading frames without blocking, routing data parts, refusing,
// sending, timeouts. Handshake, batches and weights are in their own files.
#include "nmcm/runtime/node.h"

#include <cstring>

#include "text.h"

namespace nmcm::runtime {

using net::DecodeEvent;
using net::ErrorCode;
using net::FrameHeader;
using net::FrameMeta;
using net::IoStatus;
using net::MsgType;

namespace {

// Frames that run forward or the loss: they must wait while a GRADIENTS data part is arriving in
// Stage::grad_in(), a transient buffer that the memory plan may share with forward's transient
// activations (docs/blob-format.md, "Buffer record": lifetimes are per micro-batch).
bool needs_compute(MsgType type) {
  return type == MsgType::kInputs || type == MsgType::kActivations || type == MsgType::kLabels;
}

}  // namespace

Node::Node(Stage& stage, const NodeConfig& config, NodeNetwork& network, NodeClock& clock)
    : stage_(stage), config_(config), network_(network), clock_(clock) {}

Status Node::start() {
  if (started_) return error(StatusCode::kBadState, "the node is already started");
  if (!stage_.loaded()) return error(StatusCode::kBadState, "no stage loaded");
  const BlobHeader& header = stage_.layout().header;
  if (header.stage_index != config_.stage_index || header.stage_count != config_.stage_count ||
      std::memcmp(header.model_hash, config_.model_hash, net::kHashSize) != 0) {
    return error(StatusCode::kMismatch, "the loaded stage is not the one the node is built for");
  }
  if (config_.has_downstream == stage_.is_last()) {
    return error(StatusCode::kInvalidArgument,
                 "every stage but the last, and only those, has a downstream neighbour");
  }
  if (config_.arena == nullptr || config_.cluster == nullptr) {
    return error(StatusCode::kInvalidArgument, "the node config has no arena or cluster name");
  }
  limit_ = net::payload_limit(stage_.micro_batch(), stage_.input_floats(), stage_.output_floats(),
                              stage_.is_last());
  for (Connection& c : inbound_) c.decoder.set_max_payload(limit_);
  down_.decoder.set_max_payload(limit_);
  for (uint32_t t = 0; t < stage_.tensor_count(); ++t) {
    valid_upto_[0][t] = valid_upto_[1][t] = stage_.layout().tensors[t].count;
  }
  started_ms_ = last_frame_ms_ = now();
  tick_mark_ = clock_.ticks();
  if (network_.listen(config_.listen) != IoStatus::kOk) {
    return error(StatusCode::kInvalidArgument, "cannot listen on the node's address and port");
  }
  started_ = true;
  Text line;
  line.s("stage ").u(config_.stage_index).s("/").u(config_.stage_count);
  line.s(" listening on ").ip(config_.listen.ip, config_.listen.port);
  line.s(", receive limit ").u(limit_).s(" bytes, ").u(stage_.slots()).s(" slots");
  log(line.c_str());
  reach_downstream();
  return ok_status();
}

void Node::poll(uint32_t max_wait_ms) {
  if (!started_ || stopped_) return;
  bool progress = accept_new();
  service_downstream();
  for (Connection& c : inbound_) {
    if (stopped_) return;
    progress = pump(c) || progress;
  }
  if (stopped_) return;
  progress = pump(down_) || progress;
  if (stopped_) return;
  check_timeouts();
  if (progress || stopped_) return;
  uint32_t wait = max_wait_ms;
  if (link_ == Link::kConnecting) {
    const int32_t until = static_cast<int32_t>(link_next_try_ms_ - now());
    const uint32_t left = until > 0 ? static_cast<uint32_t>(until) : 0;
    if (left < wait) wait = left;
  }
  charge(kIdle);
  network_.wait(wait);
  charge(kIdle);
}

bool Node::accept_new() {
  bool progress = false;
  for (uint32_t n = 0; n <= kMaxInbound; ++n) {
    net::Transport* t = network_.accept();
    if (t == nullptr) break;
    progress = true;
    Connection* c = nullptr;
    for (Connection& slot : inbound_) {
      if (!slot.open()) {
        c = &slot;
        break;
      }
    }
    if (c == nullptr) {
      // Every slot is taken: the oldest connection that has not said HELLO gives way, so that
      // idle or half-open connections (a port scanner, a peer that vanished) cannot keep the
      // coordinator or a neighbour out. Connections that said who they are keep their slots.
      for (Connection& slot : inbound_) {
        if (slot.peer == Peer::kPending && (c == nullptr || slot.opened_ms < c->opened_ms)) {
          c = &slot;
        }
      }
      if (c == nullptr) {
        log("refused a connection: every connection slot is taken");
        network_.release(t);
        continue;
      }
      close(*c, "closed to make room for a new connection: no HELLO yet");
    }
    c->transport = t;
    c->decoder.reset();
    c->sender = net::FrameSender(t);
    c->peer = Peer::kPending;
    c->opened_ms = c->last_byte_ms = now();
    c->peer_limit = net::kMinPayloadLimit;
    c->frame_ready = false;
    c->sink = Sink::kNone;
    c->refusal = ErrorCode::kNone;
  }
  return progress;
}

// Reads what the connection has, without waiting, until one frame is complete (then handles it)
// or no byte is left. True if anything moved.
bool Node::pump(Connection& c) {
  if (!c.open()) return false;
  bool progress = false;
  if (!c.frame_ready) {
    progress = read_frame(c);
    if (!c.frame_ready) return progress;
  }
  // A frame that needs the stage waits while a gradient is landing in its buffers.
  if (c.refusal == ErrorCode::kNone && grad_in_busy_ && needs_compute(c.decoder.header().type)) {
    return progress;
  }
  c.frame_ready = false;
  dispatch(c);
  return true;
}

// Reads what the connection has, without waiting, until one frame is complete (it is then
// c.frame_ready, for pump() to handle) or no byte is left. Handles a stream's end and a decoding
// error, never a frame: so on_hello() can look at another connection without its frames running
// inside the handshake. True if anything moved.
bool Node::read_frame(Connection& c) {
  if (!c.open() || c.frame_ready) return false;
  bool progress = false;
  for (;;) {
    const net::ByteSpan span = c.decoder.want();
    if (span.size == 0) {  // only in the decoder's error state, which close() always follows
      on_decode_error(c);
      return true;
    }
    charge(kIdle);
    const net::IoResult r = c.transport->recv_some(span.data, span.size, 0);
    if (r.status == IoStatus::kTimeout) {
      charge(kIdle);
      return progress;
    }
    if (r.status != IoStatus::kOk) {
      charge(kIdle);
      on_stream_end(c, r.status);
      return true;
    }
    charge(kComm);
    progress = true;
    bytes_received_ += r.bytes;
    c.last_byte_ms = now();
    DecodeEvent event = c.decoder.commit(r.bytes);
    if (event == DecodeEvent::kPayload) event = route(c);
    if (event == DecodeEvent::kError) {
      on_decode_error(c);
      return true;
    }
    if (event == DecodeEvent::kFrame) {
      ++frames_received_;
      last_frame_ms_ = now();
      if (&c == &down_ && c.sink == Sink::kGradIn) grad_in_busy_ = false;
      c.frame_ready = true;
      return true;
    }
  }
}

// Header and fixed part are checked (1-9): choose where the data part goes (docs/protocol.md,
// "Never touching the arena with unchecked bytes").
DecodeEvent Node::route(Connection& c) {
  c.sink = Sink::kNone;
  c.refusal = ErrorCode::kNone;
  switch (c.decoder.header().type) {
    case MsgType::kError:
      c.sink = Sink::kReason;
      return c.decoder.accept_payload(c.text, net::kMaxErrorText);
    case MsgType::kInputs:
    case MsgType::kLabels:
    case MsgType::kActivations:
    case MsgType::kGradients:
      return route_tensor(c);
    case MsgType::kSetWeights:
      return route_set_weights(c);
    default:
      break;
  }
  Text why;
  why.s(net::type_name(c.decoder.header().type)).s(" is never sent to a node");
  return discard(c, ErrorCode::kUnexpected, 0, why.c_str());
}

DecodeEvent Node::discard(Connection& c, ErrorCode code, uint32_t detail, const char* reason) {
  c.sink = Sink::kDiscard;
  c.refusal = code;
  c.refusal_detail = detail;
  copy_text(c.text, sizeof c.text, reason);
  return c.decoder.skip_payload();
}

void Node::dispatch(Connection& c) {
  const FrameHeader& h = c.decoder.header();
  if (c.refusal != ErrorCode::kNone) {
    refuse(c, c.refusal, c.refusal_detail, c.text, meta_of(h));
    return;
  }
  if (h.type == MsgType::kError) {
    c.text[c.sink == Sink::kReason ? c.decoder.data_size() : 0] = '\0';
    net::ErrorHead head{};
    net::decode(c.decoder.fixed(), &head);
    Text line;
    line.s(peer_name(c)).s(" reported ").s(net::error_name(head.code)).s(" (");
    line.u(head.detail).s("): ").quoted(c.text);
    log(line.c_str());
    // A BUSY or TIMEOUT from downstream during the handshake passes (its old connection from us
    // is still being closed); anything else there will not fix itself: stop trying until asked.
    if (&c == &down_ && link_ == Link::kHandshake && head.code != ErrorCode::kBusy &&
        head.code != ErrorCode::kTimeout) {
      link_ = Link::kIdle;
    }
    close(c, "closed after the peer's ERROR");
    return;
  }
  switch (c.peer) {
    case Peer::kPending:
      if (h.type == MsgType::kHello) {
        on_hello(c);
      } else {
        refuse(c, ErrorCode::kUnexpected, 0, "nothing may come before HELLO", meta_of(h));
      }
      break;
    case Peer::kCoordinator:
      switch (h.type) {
        case MsgType::kBatchBegin:
          on_batch_begin(c);
          break;
        case MsgType::kInputs:
        case MsgType::kLabels:
          on_tensor(c);
          break;
        case MsgType::kStep:
          on_step(c);
          break;
        case MsgType::kGetWeights:
          on_get_weights(c);
          break;
        case MsgType::kSetWeights:
          on_set_weights(c);
          break;
        case MsgType::kStatusRequest:
          on_status_request(c);
          break;
        case MsgType::kShutdown:
          if (send_ack(c, h)) stop();
          break;
        default: {
          Text why;
          why.s(net::type_name(h.type)).s(" is not for a node from the coordinator");
          refuse(c, ErrorCode::kUnexpected, 0, why.c_str(), meta_of(h));
        }
      }
      break;
    case Peer::kObserver:
      if (h.type == MsgType::kStatusRequest) {
        on_status_request(c);
      } else if (h.type == MsgType::kShutdown) {
        if (send_ack(c, h)) stop();
      } else {
        refuse(c, ErrorCode::kUnexpected, 0,
               "an observer may send only STATUS_REQUEST and SHUTDOWN", meta_of(h));
      }
      break;
    case Peer::kUpstream:
      if (h.type == MsgType::kActivations) {
        on_tensor(c);
      } else {
        refuse(c, ErrorCode::kUnexpected, 0, "the upstream neighbour may send only ACTIVATIONS",
               meta_of(h));
      }
      break;
    case Peer::kDownstream:
      if (link_ == Link::kHandshake) {
        if (h.type == MsgType::kHelloAck) {
          on_hello_ack(c);
        } else {
          refuse(c, ErrorCode::kUnexpected, 0, "nothing may come before HELLO_ACK", meta_of(h));
        }
      } else if (h.type == MsgType::kGradients) {
        on_tensor(c);
      } else {
        refuse(c, ErrorCode::kUnexpected, 0, "the downstream neighbour may send only GRADIENTS",
               meta_of(h));
      }
      break;
  }
  c.sink = Sink::kNone;
  c.refusal = ErrorCode::kNone;
}

void Node::on_stream_end(Connection& c, IoStatus io) {
  if (io != IoStatus::kClosed) {
    Text why;
    why.s("connection failed (").s(net::io_status_name(io)).s(")");
    close(c, why.c_str());
    return;
  }
  const bool inside = c.decoder.end_of_stream() == ErrorCode::kTruncated;
  if (c.peer == Peer::kPending && !inside && c.decoder.at_frame_start()) {
    close(c, nullptr);  // a port probe (nmcm waits for the port this way): nothing to report
    return;
  }
  close(c, inside ? "closed by the peer inside a frame" : "closed by the peer");
}

void Node::on_decode_error(Connection& c) {
  const ErrorCode code = c.decoder.error();
  const uint32_t detail = c.decoder.error_detail();
  Text why;
  switch (code) {
    case ErrorCode::kTooLarge:
      why.s("payload of ").u(detail).s(" bytes exceeds this node's limit of ").u(limit_);
      break;
    case ErrorCode::kSequence:
      why.s("frame out of sequence, expected ").u(detail);
      break;
    case ErrorCode::kBadCrc:
      why.s(net::type_name(c.decoder.header().type)).s(" frame CRC mismatch");
      break;
    default:
      why.s("frame refused: ").s(net::error_name(code));
  }
  // The header is known (and its batch worth reporting) once the data part was routed.
  const bool known = code == ErrorCode::kBadCrc || c.sink != Sink::kNone;
  refuse(c, code, detail, why.c_str(), known ? meta_of(c.decoder.header()) : net::kNoBatch);
}

void Node::check_timeouts() {
  const uint32_t t = now();
  for (Connection& c : inbound_) check_timeout(c, t);
  check_timeout(down_, t);
  const NodeTimeouts& limits = config_.timeouts;
  if (batch_.open && t - last_frame_ms_ > limits.batch_ms) {
    Text why;
    why.s("no frame for ").u(limits.batch_ms).s(" ms while batch ").u(batch_.id).s(" is open");
    // Whom the batch waits for, so that the coordinator can tell who stopped.
    bool gradients = false, activations = false;
    for (uint32_t s = 0; s < stage_.slots(); ++s) {
      const Slot& slot = slots_[s];
      if (!slot.used) continue;
      gradients = gradients || (slot.forwarded && !stage_.is_last() && !batch_.eval);
      activations = activations || (!slot.has_input && !stage_.is_first());
    }
    if (gradients) {
      why.s(", waiting for GRADIENTS from the downstream neighbour (stage ");
      why.u(stage_.stage_index() + 1u).s(")");
    } else if (activations) {
      why.s(", waiting for ACTIVATIONS from the upstream neighbour (stage ");
      why.u(stage_.stage_index() - 1u).s(")");
    }
    log(why.c_str());
    const FrameMeta meta = batch_meta(0);
    drop_batch("no frame arrived within the batch timeout");
    Connection* coordinator = holder(Peer::kCoordinator);
    if (coordinator != nullptr)
      error_close(*coordinator, ErrorCode::kTimeout, 0, why.c_str(), meta);
  }
}

void Node::check_timeout(Connection& c, uint32_t t) {
  const NodeTimeouts& limits = config_.timeouts;
  if (!c.open() || c.frame_ready) return;
  const bool is_down = &c == &down_;
  const bool handshake = is_down ? link_ == Link::kHandshake : c.peer == Peer::kPending;
  if (handshake && t - c.opened_ms > limits.hello_ms) {
    close(c, is_down ? "no HELLO_ACK in time" : "no HELLO in time");
    return;
  }
  if (!c.decoder.at_frame_start() && t - c.last_byte_ms > limits.frame_ms) {
    c.decoder.refuse(ErrorCode::kTimeout);
    Text why;
    why.s("no byte for ").u(limits.frame_ms).s(" ms inside a frame");
    refuse(c, ErrorCode::kTimeout, 0, why.c_str(), net::kNoBatch);
  }
}

bool Node::send(Connection& c, MsgType type, const FrameMeta& meta, const uint8_t* fixed,
                uint32_t fixed_size, const void* data, uint32_t data_size) {
  if (!c.open()) return false;
  if (uint64_t{fixed_size} + data_size > c.peer_limit) {
    Text why;
    why.s("a ").s(net::type_name(type)).s(" of ").u(uint64_t{fixed_size} + data_size);
    why.s(" bytes exceeds the peer's limit of ").u(c.peer_limit);
    close(c, why.c_str());
    return false;
  }
  charge(kIdle);
  const uint64_t before = c.sender.bytes_sent();
  const IoStatus io =
      c.sender.send(type, meta, fixed, fixed_size, data, data_size, config_.timeouts.send_ms);
  charge(kComm);
  bytes_sent_ += c.sender.bytes_sent() - before;
  if (io == IoStatus::kOk) {
    ++frames_sent_;
    return true;
  }
  Text why;
  why.s("sending ").s(net::type_name(type)).s(" failed (").s(net::io_status_name(io)).s(")");
  close(c, why.c_str());
  return false;
}

bool Node::send_ack(Connection& c, const FrameHeader& acked) {
  uint8_t fixed[net::Ack::kSize];
  net::encode(net::Ack{acked.type, acked.sequence}, fixed);
  return send(c, MsgType::kAck, meta_of(acked), fixed, sizeof fixed, nullptr, 0);
}

void Node::refuse(Connection& c, ErrorCode code, uint32_t detail, const char* reason,
                  const FrameMeta& meta) {
  ++frames_rejected_;
  error_close(c, code, detail, reason, meta);
}

// docs/protocol.md, "On any error": ERROR (code, detail, reason) if the connection can still take
// it, then close. Nothing on a stream can be trusted after a bad frame.
void Node::error_close(Connection& c, ErrorCode code, uint32_t detail, const char* reason,
                       const FrameMeta& meta) {
  if (!c.open()) return;
  Text line;
  line.s("ERROR ").s(net::error_name(code)).s(" to the ").s(peer_name(c)).s(": ").s(reason);
  log(line.c_str());
  charge(kIdle);
  const uint64_t before = c.sender.bytes_sent();
  if (c.sender.send_error(code, detail, reason, meta, config_.timeouts.send_ms) == IoStatus::kOk) {
    ++frames_sent_;
  }
  bytes_sent_ += c.sender.bytes_sent() - before;
  charge(kComm);
  close(c, nullptr);
}

void Node::close(Connection& c, const char* why) {
  if (!c.open()) return;
  const Peer peer = c.peer;
  const bool is_down = &c == &down_;
  // A SET_WEIGHTS chunk cut short left unknown values in its tensor (docs/protocol.md).
  if (c.sink == Sink::kWeights) invalidate_weights(c.sink_kind);
  if (is_down && c.sink == Sink::kGradIn) grad_in_busy_ = false;
  if (why != nullptr) {
    Text line;
    line.s(peer_name(c)).s(": ").s(why);
    log(line.c_str());
  }
  network_.release(c.transport);
  c.transport = nullptr;
  c.frame_ready = false;
  c.sink = Sink::kNone;
  c.refusal = ErrorCode::kNone;
  if (is_down) {
    downstream_lost();
    return;
  }
  c.peer = Peer::kPending;
  if (peer == Peer::kCoordinator) {
    drop_batch("the coordinator's connection closed");
  } else if (peer == Peer::kUpstream && batch_needs_neighbours()) {
    drop_batch("the upstream neighbour's connection closed");
  }
}

void Node::stop() {
  log("SHUTDOWN: closing every connection");
  stopped_ = true;  // first: losing the downstream link must not start a reconnect
  for (Connection& c : inbound_) close(c, nullptr);
  close(down_, nullptr);
  link_ = Link::kIdle;
  network_.stop_listening();
}

Node::Connection* Node::holder(Peer role) {
  for (Connection& c : inbound_) {
    if (c.open() && c.peer == role) return &c;
  }
  return nullptr;
}

const char* Node::peer_name(const Connection& c) const {
  if (&c == &down_) return "downstream neighbour";
  switch (c.peer) {
    case Peer::kCoordinator:
      return "coordinator";
    case Peer::kUpstream:
      return "upstream neighbour";
    case Peer::kObserver:
      return "observer";
    default:
      return "new connection";
  }
}

FrameMeta Node::meta_of(const FrameHeader& h) {
  return FrameMeta{static_cast<uint16_t>(h.flags & net::kFlagEval), h.batch, h.micro_batch};
}

void Node::log(const char* line) const {
  if (config_.log != nullptr) config_.log(line);
}

void Node::charge(Ticks kind) {
  const uint64_t t = clock_.ticks();
  ticks_[kind] += t - tick_mark_;
  tick_mark_ = t;
}

}  // namespace nmcm::runtime
