// HELLO / HELLO_ACK (docs/protocol.md, "HELLO and HELLO_ACK") and the link to the downstream
// neighbour: connect with retry, say HELLO, check its HELLO_ACK, reconnect when it is lost.
#include "nmcm/runtime/node.h"

#include <cstring>

#include "text.h"

namespace nmcm::runtime {

using net::ErrorCode;
using net::Hello;
using net::IoStatus;
using net::MsgType;
using net::Role;

namespace {

const char* role_name(Role role) {
  switch (role) {
    case Role::kCoordinator:
      return "coordinator";
    case Role::kUpstream:
      return "upstream neighbour";
    case Role::kNode:
      return "node";
    case Role::kObserver:
      return "observer";
  }
  return "?";
}

// The largest tensor frame (payload bytes) of `features` floats per sample that goes to a peer.
uint64_t tensor_frame(uint32_t micro_batch, uint32_t features) {
  return net::TensorHead::kSize + uint64_t{micro_batch} * features * 4u;
}

}  // namespace

void Node::fill_identity(Hello* h, Role role) const {
  *h = Hello{};
  h->role = role;
  h->stage_index = stage_.stage_index();
  h->stage_count = stage_.stage_count();
  h->micro_batch = static_cast<uint16_t>(stage_.micro_batch());
  h->max_payload = limit_;
  h->input_features = stage_.input_floats();
  h->output_features = stage_.output_floats();
  h->slots = static_cast<uint16_t>(stage_.slots());
  h->tensor_count = static_cast<uint16_t>(stage_.tensor_count());
  std::memcpy(h->model_hash, config_.model_hash, net::kHashSize);
  std::memcpy(h->firmware_hash, config_.firmware_hash, net::kHashSize);
  copy_text(h->cluster, sizeof h->cluster, config_.cluster);
  h->instance = role == Role::kNode ? config_.instance : 0;
}

// The checks a listener makes of a coordinator's or neighbour's identity, in the table's order;
// want_stage kAnyStage (an observer's) checks the cluster and the model only.
ErrorCode Node::check_identity(const Hello& h, uint16_t want_stage, uint32_t* detail,
                               Text* why) const {
  *detail = 0;
  if (std::strncmp(h.cluster, config_.cluster, net::kClusterFieldSize) != 0) {
    why->s("cluster ").quoted(h.cluster).s(", this node is in ").quoted(config_.cluster);
    return ErrorCode::kClusterMismatch;
  }
  if (std::memcmp(h.model_hash, config_.model_hash, net::kHashSize) != 0) {
    why->s("model ").hex(h.model_hash, net::kHashSize).s(", this node runs ");
    why->hex(config_.model_hash, net::kHashSize);
    return ErrorCode::kModelMismatch;
  }
  if (want_stage == kAnyStage) return ErrorCode::kNone;
  if (h.stage_count != stage_.stage_count() || h.stage_index != want_stage) {
    why->s("stage ").u(h.stage_index).s(" of ").u(h.stage_count).s(", expected stage ");
    why->u(want_stage).s(" of ").u(stage_.stage_count());
    *detail = want_stage;
    return ErrorCode::kStageMismatch;
  }
  return ErrorCode::kNone;
}

void Node::on_hello(Connection& c) {
  Hello h{};
  net::decode(c.decoder.fixed(), &h);
  const net::FrameMeta meta = meta_of(c.decoder.header());
  Text why;
  uint32_t detail = 0;
  ErrorCode code = ErrorCode::kNone;
  Peer role = Peer::kObserver;
  switch (h.role) {
    case Role::kCoordinator:
      role = Peer::kCoordinator;
      code = check_identity(h, stage_.stage_index(), &detail, &why);
      break;
    case Role::kUpstream:
      role = Peer::kUpstream;
      if (stage_.is_first()) {
        why.s("stage 0 has no upstream neighbour");
        code = ErrorCode::kStageMismatch;
        break;
      }
      code = check_identity(h, static_cast<uint16_t>(stage_.stage_index() - 1), &detail, &why);
      if (code == ErrorCode::kNone && h.output_features != stage_.input_floats()) {
        why.s("output of ").u(h.output_features).s(" features, this stage takes ");
        why.u(stage_.input_floats());
        detail = stage_.input_floats();
        code = ErrorCode::kStageMismatch;
      } else if (code == ErrorCode::kNone &&
                 h.max_payload < tensor_frame(stage_.micro_batch(), stage_.input_floats())) {
        why.s("receive limit ").u(h.max_payload).s(" is below this stage's GRADIENTS of ");
        why.u(tensor_frame(stage_.micro_batch(), stage_.input_floats())).s(" bytes");
        detail = h.max_payload;
        code = ErrorCode::kStageMismatch;
      }
      break;
    case Role::kObserver:
      // Of this cluster and model, whatever its stage fields: a tool of another cluster that
      // found this port must neither read nor stop the node.
      code = check_identity(h, kAnyStage, &detail, &why);
      break;
    case Role::kNode:
      why.s("role node is only for HELLO_ACK");
      code = ErrorCode::kUnexpected;
      break;
  }
  if (code == ErrorCode::kNone && h.max_payload < net::kMinPayloadLimit) {
    why.s("max_payload ").u(h.max_payload).s(" is below the minimum of ");
    why.u(net::kMinPayloadLimit);
    detail = h.max_payload;
    code = ErrorCode::kMalformed;
  }
  if (code == ErrorCode::kNone) {
    Connection* other = holder(role);
    if (other != nullptr) {
      // The holder may be gone with its close not yet read (a coordinator reconnecting at once):
      // read it first, so that only a live holder makes this one BUSY. A frame of it that
      // completes meanwhile waits for the loop (read_frame): handled here, it could be another
      // HELLO, and the handshake code would nest in itself.
      read_frame(*other);
      if (stopped_ || !c.open()) return;
      if (holder(role) != nullptr) {
        why.s("a ").s(role_name(h.role)).s(" is already connected");
        code = ErrorCode::kBusy;
      }
    }
  }
  if (code != ErrorCode::kNone) {
    refuse(c, code, detail, why.c_str(), meta);
    return;
  }
  Hello ack{};
  fill_identity(&ack, Role::kNode);
  uint8_t fixed[Hello::kSize];
  net::encode(ack, fixed);
  if (!send(c, MsgType::kHelloAck, net::kNoBatch, fixed, sizeof fixed, nullptr, 0)) return;
  c.peer = role;
  c.peer_limit = h.max_payload;
  Text line;
  line.s(role_name(h.role)).s(" connected");
  if (role == Peer::kUpstream) line.s(" (stage ").u(h.stage_index).s(")");
  log(line.c_str());
  // A coordinator means work is coming: if the downstream neighbour was given up on, try again.
  if (role == Peer::kCoordinator) reach_downstream();
}

void Node::on_hello_ack(Connection& c) {
  Hello h{};
  net::decode(c.decoder.fixed(), &h);
  Text why;
  uint32_t detail = 0;
  ErrorCode code = ErrorCode::kNone;
  if (h.role != Role::kNode) {
    why.s("the downstream neighbour answered as ").s(role_name(h.role));
    code = ErrorCode::kUnexpected;
  } else {
    code = check_identity(h, static_cast<uint16_t>(stage_.stage_index() + 1), &detail, &why);
  }
  if (code == ErrorCode::kNone && h.input_features != stage_.output_floats()) {
    why.s("the downstream stage takes ").u(h.input_features).s(" features, this one gives ");
    why.u(stage_.output_floats());
    detail = stage_.output_floats();
    code = ErrorCode::kStageMismatch;
  } else if (code == ErrorCode::kNone &&
             h.max_payload < tensor_frame(stage_.micro_batch(), stage_.output_floats())) {
    why.s("receive limit ").u(h.max_payload).s(" is below this stage's ACTIVATIONS of ");
    why.u(tensor_frame(stage_.micro_batch(), stage_.output_floats())).s(" bytes");
    detail = h.max_payload;
    code = ErrorCode::kStageMismatch;
  }
  if (code != ErrorCode::kNone) {
    // A neighbour of another build will not change by itself: stop trying until asked again.
    link_ = Link::kIdle;
    refuse(c, code, detail, why.c_str(), net::kNoBatch);
    return;
  }
  c.peer_limit = h.max_payload;
  link_ = Link::kReady;
  Text line;
  line.s("connected to the downstream neighbour (stage ").u(h.stage_index).s(") at ");
  line.ip(config_.downstream.ip, config_.downstream.port);
  log(line.c_str());
  flush_outputs();
}

// Opens a new attempt (docs/protocol.md: retry every 100 ms for up to the connect timeout) unless
// one is under way or the link is up.
void Node::reach_downstream() {
  if (!config_.has_downstream || stopped_ || link_ != Link::kIdle) return;
  link_ = Link::kConnecting;
  link_window_ms_ = link_next_try_ms_ = now();
}

void Node::service_downstream() {
  if (link_ != Link::kConnecting || stopped_) return;
  const uint32_t t = now();
  const NodeTimeouts& limits = config_.timeouts;
  const uint32_t spent = t - link_window_ms_;
  if (spent >= limits.connect_ms) {
    link_ = Link::kIdle;
    Text why;
    why.s("downstream neighbour at ").ip(config_.downstream.ip, config_.downstream.port);
    why.s(" not reachable for ").u(limits.connect_ms).s(" ms");
    log(why.c_str());
    if (batch_needs_neighbours()) {
      // The coordinator would otherwise wait for answers that cannot come.
      const net::FrameMeta meta = batch_meta(0);
      drop_batch("the downstream neighbour is not reachable");
      Connection* coordinator = holder(Peer::kCoordinator);
      if (coordinator != nullptr) {
        error_close(*coordinator, ErrorCode::kUnexpected, 0, why.c_str(), meta);
      }
    }
    return;
  }
  if (static_cast<int32_t>(t - link_next_try_ms_) < 0) return;
  const uint32_t left = limits.connect_ms - spent;
  net::Transport* transport = nullptr;
  charge(kIdle);
  const IoStatus io = network_.connect(config_.downstream, left < 200 ? left : 200, &transport);
  charge(kIdle);
  if (io != IoStatus::kOk || transport == nullptr) {
    link_next_try_ms_ = now() + limits.connect_retry_ms;
    return;
  }
  down_.transport = transport;
  down_.decoder.reset();
  down_.sender = net::FrameSender(transport);
  down_.peer = Peer::kDownstream;
  down_.opened_ms = down_.last_byte_ms = now();
  down_.peer_limit = net::kMinPayloadLimit;
  down_.frame_ready = false;
  down_.sink = Sink::kNone;
  down_.refusal = ErrorCode::kNone;
  link_ = Link::kHandshake;
  Hello hello{};
  fill_identity(&hello, Role::kUpstream);
  uint8_t fixed[Hello::kSize];
  net::encode(hello, fixed);
  send(down_, MsgType::kHello, net::kNoBatch, fixed, sizeof fixed, nullptr, 0);
}

// The downstream connection closed (close() has released it).
void Node::downstream_lost() {
  const Link was = link_;
  if (batch_needs_neighbours()) drop_batch("the downstream neighbour's connection closed");
  if (stopped_ || was == Link::kIdle) {
    link_ = Link::kIdle;
    return;
  }
  if (was == Link::kReady) {
    link_ = Link::kIdle;
    reach_downstream();  // a new attempt: the neighbour may be restarting
    return;
  }
  // During the handshake: try again within the same attempt.
  link_ = Link::kConnecting;
  link_next_try_ms_ = now() + config_.timeouts.connect_retry_ms;
}

}  // namespace nmcm::runtime
