// STATUS (docs/protocol.md, "STATUS"): where the node is and what it has spent. The time
// counters split the node's life three ways (Node::charge): compute (forward, backward, loss,
// optimizer), comm (send and receive calls that moved bytes) and idle (everything else: waiting).
#include "nmcm/runtime/node.h"

#include <cstring>
#include <limits>

namespace nmcm::runtime {

net::NodeState Node::state() const {
  if (failed_ || weights_invalid_) return net::NodeState::kFailed;
  if (!batch_.open) return net::NodeState::kIdle;
  return batch_.eval ? net::NodeState::kEvaluating : net::NodeState::kTraining;
}

net::StatusReport Node::status() const {
  net::StatusReport r{};
  r.stage_index = config_.stage_index;
  r.stage_count = config_.stage_count;
  r.state = state();
  r.steps = steps_;
  r.batch = last_batch_id_;
  r.last_loss = has_loss_ ? last_loss_ : std::numeric_limits<float>::quiet_NaN();
  r.arena_used = stage_.loaded() ? stage_.layout().header.arena_size : 0;
  r.arena_capacity = config_.arena_capacity;
  r.tick_hz = clock_.tick_hz();
  r.compute_ticks = ticks_[kCompute];
  r.comm_ticks = ticks_[kComm];
  r.idle_ticks = ticks_[kIdle];
  r.bytes_sent = bytes_sent_;
  r.bytes_received = bytes_received_;
  r.frames_sent = frames_sent_;
  r.frames_received = frames_received_;
  r.frames_rejected = frames_rejected_;
  r.uptime_ms = clock_.millis() - started_ms_;
  std::memcpy(r.model_hash, config_.model_hash, net::kHashSize);
  std::memcpy(r.firmware_hash, config_.firmware_hash, net::kHashSize);
  return r;
}

void Node::on_status_request(Connection& c) {
  charge(kIdle);  // the counters include everything up to this answer
  uint8_t fixed[net::StatusReport::kSize];
  net::encode(status(), fixed);
  send(c, net::MsgType::kStatus, net::kNoBatch, fixed, sizeof fixed, nullptr, 0);
}

}  // namespace nmcm::runtime
