// Batches (docs/protocol.md, "One batch, step by step" and "Flow control"): BATCH_BEGIN, the slot
// table (micro-batch id -> slot), INPUTS / LABELS / ACTIVATIONS / GRADIENTS straight into the
// arena, forward, loss, backward, METRICS, ACK, STEP.
#include "nmcm/runtime/node.h"
#include "text.h"

namespace nmcm::runtime {

using net::DecodeEvent;
using net::ErrorCode;
using net::FrameHeader;
using net::FrameMeta;
using net::MsgType;

namespace {

constexpr uint16_t kNoFlags = 0;

}  // namespace

FrameMeta Node::batch_meta(uint16_t micro_batch) const {
  return FrameMeta{batch_.eval ? net::kFlagEval : kNoFlags, batch_.id, micro_batch};
}

bool Node::is_done(uint16_t micro_batch) const {
  return (batch_.done[micro_batch / 8] & (1u << (micro_batch % 8))) != 0;
}

bool Node::batch_needs_neighbours() const {
  return batch_.open && batch_.completed < batch_.micro_batches;
}

int32_t Node::find_slot(uint16_t micro_batch) const {
  for (uint32_t s = 0; s < stage_.slots(); ++s) {
    if (slots_[s].used && slots_[s].micro_batch == micro_batch) return static_cast<int32_t>(s);
  }
  return -1;
}

int32_t Node::take_slot(uint16_t micro_batch, uint16_t samples) {
  for (uint32_t s = 0; s < stage_.slots(); ++s) {
    if (!slots_[s].used) {
      slots_[s] = Slot{};
      slots_[s].used = true;
      slots_[s].micro_batch = micro_batch;
      slots_[s].samples = samples;
      return static_cast<int32_t>(s);
    }
  }
  return -1;
}

void Node::drop_batch(const char* why) {
  if (!batch_.open) return;
  Text line;
  line.s("batch ").u(batch_.id).s(" dropped: ").s(why);
  log(line.c_str());
  batch_.open = false;
  dropped_batch_id_ = batch_.id;
  drop_reason_ = why;
  for (Slot& s : slots_) s = Slot{};
}

void Node::executor_failed(const Status& status) {
  Text why;
  why.s("executor: ").s(status.message);
  if (status.subject != nullptr) why.s(" (").s(status.subject).s(" ").u(status.index).s(")");
  log(why.c_str());
  // Whatever the failed call left in the arena is not to be trusted: weights are invalid until
  // the coordinator sets them again (STATUS state FAILED).
  failed_ = true;
  invalidate_weights(0);
  const FrameMeta meta = batch_meta(0);
  drop_batch("an executor error");
  Connection* coordinator = holder(Peer::kCoordinator);
  if (coordinator != nullptr) error_close(*coordinator, ErrorCode::kInternal, 0, why.c_str(), meta);
}

// docs/protocol.md, NON_FINITE: a NaN or infinity spreads to every weight within a step or two and
// the loss hides it (the log is clamped), so the first one stops the job where it appeared.
bool Node::check_finite(const float* data, uint32_t n, const char* what, uint16_t micro_batch) {
  const uint32_t at = first_non_finite(data, n);
  if (at == n) return true;
  Text why;
  why.s(data[at] != data[at] ? "NaN" : "infinity").s(" in ").s(what).s(" at element ").u(at);
  why.s(" (batch ").u(batch_.id).s(", epoch ").u(batch_.epoch).s(", micro-batch ").u(micro_batch);
  why.s(")");
  log(why.c_str());
  failed_ = true;
  invalidate_weights(0);
  const FrameMeta meta = batch_meta(micro_batch);
  drop_batch("a non-finite value");
  Connection* coordinator = holder(Peer::kCoordinator);
  if (coordinator != nullptr)
    error_close(*coordinator, ErrorCode::kNonFinite, at, why.c_str(), meta);
  return false;
}

// The receiver's checks of a batch frame against the open batch; false with a refusal set.
bool Node::check_batch_frame(Connection& c, const FrameHeader& h) {
  Text why;
  if (!batch_.open) {
    if (h.batch != 0 && h.batch == dropped_batch_id_) {
      why.s("batch ").u(h.batch).s(" was dropped: ").s(drop_reason_);
    } else {
      why.s("no batch is open");
    }
    discard(c, ErrorCode::kUnexpected, h.batch, why.c_str());
    return false;
  }
  if (h.batch != batch_.id) {
    why.s("batch ").u(h.batch).s(" is not the open batch ").u(batch_.id);
    discard(c, ErrorCode::kUnexpected, batch_.id, why.c_str());
    return false;
  }
  if (((h.flags & net::kFlagEval) != 0) != batch_.eval) {
    why.s("EVAL flag does not match the mode of batch ").u(batch_.id);
    discard(c, ErrorCode::kUnexpected, 0, why.c_str());
    return false;
  }
  if (h.micro_batch >= batch_.micro_batches || is_done(h.micro_batch)) {
    why.s("micro-batch ").u(h.micro_batch);
    why.s(h.micro_batch >= batch_.micro_batches ? " is outside the batch's " : " is done, of ");
    why.u(batch_.micro_batches);
    discard(c, ErrorCode::kUnexpected, batch_.micro_batches, why.c_str());
    return false;
  }
  return true;
}

// The destination of a tensor's data part: a slot's input or labels, or Stage::grad_in().
DecodeEvent Node::route_tensor(Connection& c) {
  const FrameHeader& h = c.decoder.header();
  bool allowed = false;
  switch (h.type) {
    case MsgType::kInputs:
      allowed = c.peer == Peer::kCoordinator && stage_.is_first();
      break;
    case MsgType::kLabels:
      allowed = c.peer == Peer::kCoordinator && stage_.is_last();
      break;
    case MsgType::kActivations:
      allowed = c.peer == Peer::kUpstream;
      break;
    default:  // kGradients
      allowed = c.peer == Peer::kDownstream && link_ == Link::kReady;
      break;
  }
  Text why;
  if (!allowed) {
    why.s(net::type_name(h.type)).s(" from the ").s(peer_name(c)).s(" is not for stage ");
    why.u(stage_.stage_index());
    return discard(c, ErrorCode::kUnexpected, 0, why.c_str());
  }
  // A neighbour's frame of a batch this node dropped is still on its way: read it and forget it.
  const bool neighbour = c.peer == Peer::kUpstream || c.peer == Peer::kDownstream;
  if (neighbour && dropped_batch_id_ != 0 && h.batch == dropped_batch_id_ &&
      !(batch_.open && batch_.id == h.batch)) {
    c.sink = Sink::kDiscard;
    return c.decoder.skip_payload();
  }
  if (!check_batch_frame(c, h)) return DecodeEvent::kNeedMore;

  const uint32_t mb = stage_.micro_batch();
  uint16_t samples = 0;
  if (h.type == MsgType::kLabels) {
    net::LabelsHead head{};
    net::decode(c.decoder.fixed(), &head);
    samples = head.samples;
  } else {
    net::TensorHead head{};
    net::decode(c.decoder.fixed(), &head);
    samples = head.samples;
    const uint32_t features =
        h.type == MsgType::kGradients ? stage_.output_floats() : stage_.input_floats();
    if (head.features != features) {
      why.s(net::type_name(h.type)).s(" of ").u(head.features).s(" features, stage ");
      why.u(stage_.stage_index()).s(" takes ").u(features);
      return discard(c, ErrorCode::kStageMismatch, features, why.c_str());
    }
  }
  if (samples > mb) {
    why.s(net::type_name(h.type)).s(" of ").u(samples).s(" samples, this stage holds ").u(mb);
    return discard(c, ErrorCode::kStageMismatch, mb, why.c_str());
  }

  int32_t slot = find_slot(h.micro_batch);
  if (h.type == MsgType::kGradients) {
    if (batch_.eval) {
      return discard(c, ErrorCode::kUnexpected, 0, "no GRADIENTS in an evaluation batch");
    }
    if (slot < 0 || !slots_[slot].forwarded || slots_[slot].output_pending) {
      why.s("GRADIENTS of micro-batch ").u(h.micro_batch).s(" before its ACTIVATIONS went out");
      return discard(c, ErrorCode::kUnexpected, 0, why.c_str());
    }
  } else if (slot >= 0) {
    const bool repeat =
        h.type == MsgType::kLabels ? slots_[slot].has_labels : slots_[slot].has_input;
    if (repeat) {
      why.s(net::type_name(h.type)).s(" of micro-batch ").u(h.micro_batch).s(" came twice");
      return discard(c, ErrorCode::kUnexpected, 0, why.c_str());
    }
  }
  if (slot >= 0 && samples != slots_[slot].samples) {
    why.s(net::type_name(h.type)).s(" of ").u(samples).s(" samples for micro-batch ");
    why.u(h.micro_batch).s(" of ").u(slots_[slot].samples);
    return discard(c, ErrorCode::kStageMismatch, slots_[slot].samples, why.c_str());
  }
  if (slot < 0) {
    slot = take_slot(h.micro_batch, samples);
    if (slot < 0) {
      why.s("no free slot for micro-batch ").u(h.micro_batch).s(" (").u(stage_.slots());
      why.s(" slots)");
      return discard(c, ErrorCode::kUnexpected, stage_.slots(), why.c_str());
    }
  }
  const uint32_t s = static_cast<uint32_t>(slot);
  c.sink_slot = static_cast<uint8_t>(s);
  switch (h.type) {
    case MsgType::kLabels:
      c.sink = Sink::kLabels;
      return c.decoder.accept_payload(stage_.labels(s), size_t{mb} * 4u);
    case MsgType::kGradients:
      c.sink = Sink::kGradIn;
      grad_in_busy_ = true;
      return c.decoder.accept_payload(stage_.grad_in(), size_t{mb} * stage_.output_floats() * 4u);
    default:
      c.sink = Sink::kInput;
      return c.decoder.accept_payload(stage_.input(s), size_t{mb} * stage_.input_floats() * 4u);
  }
}

void Node::on_batch_begin(Connection& c) {
  const FrameHeader& h = c.decoder.header();
  net::BatchBegin begin{};
  net::decode(c.decoder.fixed(), &begin);
  const bool eval = begin.mode == net::Mode::kEval;
  const uint32_t mb = stage_.micro_batch();
  Text why;
  ErrorCode code = ErrorCode::kUnexpected;
  uint32_t detail = 0;
  if (batch_.open) {
    why.s("batch ").u(batch_.id).s(" is still open");
    detail = batch_.id;
  } else if (weights_invalid_ || failed_) {
    why.s("weights invalid (a SET_WEIGHTS chunk or the executor failed): set every tensor again");
  } else if (h.batch == 0) {
    why.s("batch id 0 is for frames outside a batch");
  } else if (((h.flags & net::kFlagEval) != 0) != eval) {
    why.s("EVAL flag does not match the mode");
  } else if (begin.batch_size == 0 || begin.micro_batches == 0 ||
             begin.micro_batches > begin.batch_size) {
    why.s("a batch of ").u(begin.batch_size).s(" samples in ").u(begin.micro_batches);
    why.s(" micro-batches");
    code = ErrorCode::kStageMismatch;
  } else if (begin.micro_batches > kMaxMicroBatches) {
    why.u(begin.micro_batches).s(" micro-batches, this node tracks at most ").u(kMaxMicroBatches);
    code = ErrorCode::kStageMismatch;
    detail = kMaxMicroBatches;
  } else if (begin.batch_size > uint32_t{begin.micro_batches} * mb) {
    why.u(begin.batch_size).s(" samples do not fit ").u(begin.micro_batches);
    why.s(" micro-batches of at most ").u(mb);
    code = ErrorCode::kStageMismatch;
    detail = mb;
  } else {
    code = ErrorCode::kNone;
  }
  if (code != ErrorCode::kNone) {
    refuse(c, code, detail, why.c_str(), meta_of(h));
    return;
  }
  batch_ = Batch{};
  batch_.open = true;
  batch_.eval = eval;
  batch_.id = h.batch;
  batch_.size = begin.batch_size;
  batch_.micro_batches = begin.micro_batches;
  batch_.epoch = begin.epoch;
  batch_.loss = static_cast<LossKind>(begin.loss);
  for (Slot& s : slots_) s = Slot{};
  last_batch_id_ = h.batch;
  last_frame_ms_ = now();
  if (!eval) {
    charge(kIdle);
    stage_.zero_grad();
    charge(kCompute);
  }
  if (!send_ack(c, h)) return;
  reach_downstream();  // if it was given up on, this batch needs it
}

// A tensor frame whose data part landed (CRC checked): run what it makes possible.
void Node::on_tensor(Connection& c) {
  const FrameHeader& h = c.decoder.header();
  if (c.sink == Sink::kDiscard) return;  // a dropped batch's frame from a neighbour
  const uint32_t slot = c.sink_slot;
  Slot& s = slots_[slot];
  // The batch may have been dropped (another connection lost) while this frame arrived.
  if (!batch_.open || batch_.id != h.batch || !s.used || s.micro_batch != h.micro_batch) return;
  Status status = ok_status();
  switch (c.sink) {
    case Sink::kInput:
      s.has_input = true;
      if (stage_.is_first()) s.inputs_sequence = h.sequence;
      charge(kIdle);
      status = stage_.forward(slot, s.samples);
      charge(kCompute);
      if (!status.ok()) {
        executor_failed(status);
        return;
      }
      if (!check_finite(stage_.output(slot), uint32_t{s.samples} * stage_.output_floats(),
                        "the stage's output", s.micro_batch)) {
        return;
      }
      s.forwarded = true;
      if (!stage_.is_last()) {
        s.output_pending = true;
        flush_outputs();
      } else if (s.has_labels) {
        finish_last(slot);
      }
      return;
    case Sink::kLabels: {
      const int32_t* y = stage_.labels(slot);
      const uint32_t classes = stage_.output_floats();
      for (uint32_t i = 0; i < s.samples; ++i) {
        if (y[i] < 0 || static_cast<uint32_t>(y[i]) >= classes) {
          Text why;
          why.s("label of sample ").u(i).s(" is outside 0..").u(classes - 1);
          refuse(c, ErrorCode::kStageMismatch, classes, why.c_str(), meta_of(h));
          return;
        }
      }
      s.has_labels = true;
      if (s.forwarded) finish_last(slot);
      return;
    }
    case Sink::kGradIn:
      backward_and_send(slot);
      return;
    default:
      return;
  }
}

// Last stage, forward done and labels in: loss, METRICS, and in training backward and GRADIENTS.
void Node::finish_last(uint32_t slot) {
  Slot& s = slots_[slot];
  LossResult result{};
  charge(kIdle);
  const Status status =
      stage_.loss_backward_seed(slot, s.samples, batch_.size, batch_.loss, &result);
  charge(kCompute);
  if (!status.ok()) {
    executor_failed(status);
    return;
  }
  if (!check_finite(&result.loss_sum, 1, "the loss", s.micro_batch)) return;
  Connection* coordinator = holder(Peer::kCoordinator);
  if (coordinator == nullptr) {
    drop_batch("the coordinator is gone");
    return;
  }
  uint8_t fixed[net::Metrics::kSize];
  net::encode(net::Metrics{result.loss_sum, result.correct, s.samples}, fixed);
  if (!send(*coordinator, MsgType::kMetrics, batch_meta(s.micro_batch), fixed, sizeof fixed,
            nullptr, 0)) {
    return;
  }
  batch_.loss_sum += result.loss_sum;
  if (batch_.eval) {
    complete(slot);
  } else {
    backward_and_send(slot);
  }
}

// Training, the slot's output gradient in (GRADIENTS from downstream, or the loss on the last
// stage): backward, GRADIENTS upstream (all stages but the first), and the micro-batch is done.
void Node::backward_and_send(uint32_t slot) {
  const Slot& s = slots_[slot];
  charge(kIdle);
  const Status status = stage_.backward(slot, s.samples);
  charge(kCompute);
  if (!status.ok()) {
    executor_failed(status);
    return;
  }
  if (!stage_.is_first()) {
    const uint32_t floats = uint32_t{s.samples} * stage_.input_floats();
    if (!check_finite(stage_.grad_out(), floats, "the gradient for upstream", s.micro_batch)) {
      return;
    }
    Connection* up = holder(Peer::kUpstream);
    if (up == nullptr) {
      drop_batch("the upstream neighbour is gone");
      return;
    }
    uint8_t head[net::TensorHead::kSize];
    net::encode(net::TensorHead{s.samples, stage_.input_floats()}, head);
    if (!send(*up, MsgType::kGradients, batch_meta(s.micro_batch), head, sizeof head,
              stage_.grad_out(), floats * 4u)) {
      return;
    }
  }
  complete(slot);
}

// A micro-batch is done at this stage (backward in training; forward and its output sent in
// evaluation): its slot is free, and the first stage says so with the ACK of its INPUTS.
void Node::complete(uint32_t slot) {
  const Slot s = slots_[slot];
  slots_[slot] = Slot{};
  batch_.done[s.micro_batch / 8] =
      static_cast<uint8_t>(batch_.done[s.micro_batch / 8] | (1u << (s.micro_batch % 8)));
  ++batch_.completed;
  batch_.samples += s.samples;
  const FrameMeta meta = batch_meta(s.micro_batch);
  // An evaluation batch has no STEP: it closes when its last micro-batch is done.
  if (batch_.eval && batch_.completed == batch_.micro_batches) batch_.open = false;
  if (stage_.is_first()) {
    Connection* coordinator = holder(Peer::kCoordinator);
    if (coordinator == nullptr) return;
    uint8_t fixed[net::Ack::kSize];
    net::encode(net::Ack{MsgType::kInputs, s.inputs_sequence}, fixed);
    send(*coordinator, MsgType::kAck, meta, fixed, sizeof fixed, nullptr, 0);
  }
}

// Sends the ACTIVATIONS waiting for the downstream link, lowest micro-batch first.
void Node::flush_outputs() {
  if (link_ != Link::kReady) {
    Text line;
    line.s("batch ").u(batch_.id).s(": ACTIVATIONS wait for the downstream neighbour");
    log(line.c_str());
    reach_downstream();  // if given up on: this batch needs it
    return;
  }
  while (batch_.open) {
    int32_t next = -1;
    for (uint32_t i = 0; i < stage_.slots(); ++i) {
      if (slots_[i].used && slots_[i].output_pending &&
          (next < 0 || slots_[i].micro_batch < slots_[next].micro_batch)) {
        next = static_cast<int32_t>(i);
      }
    }
    if (next < 0) return;
    const uint32_t slot = static_cast<uint32_t>(next);
    Slot& s = slots_[slot];
    uint8_t fixed[net::TensorHead::kSize];
    net::encode(net::TensorHead{s.samples, stage_.output_floats()}, fixed);
    if (!send(down_, MsgType::kActivations, batch_meta(s.micro_batch), fixed, sizeof fixed,
              stage_.output(slot), uint32_t{s.samples} * stage_.output_floats() * 4u)) {
      return;
    }
    s.output_pending = false;
    if (batch_.eval) complete(slot);
  }
}

void Node::on_step(Connection& c) {
  const FrameHeader& h = c.decoder.header();
  net::Step step{};
  net::decode(c.decoder.fixed(), &step);
  Text why;
  ErrorCode code = ErrorCode::kUnexpected;
  uint32_t detail = 0;
  const bool momentum_planned = (stage_.layout().header.flags & kFlagMomentum) != 0;
  if (!batch_.open || h.batch != batch_.id) {
    why.s("STEP for batch ").u(h.batch).s(", which is not open");
  } else if (batch_.eval || (h.flags & net::kFlagEval) != 0) {
    why.s("no STEP in an evaluation batch");
  } else if (batch_.completed < batch_.micro_batches) {
    why.s("backward done for ").u(batch_.completed).s(" of ").u(batch_.micro_batches);
    why.s(" micro-batches");
    detail = batch_.completed;
  } else if (batch_.samples != batch_.size) {
    why.s("the micro-batches held ").u(batch_.samples).s(" samples, BATCH_BEGIN said ");
    why.u(batch_.size);
    code = ErrorCode::kStageMismatch;
    detail = batch_.size;
  } else if (step.momentum != 0.0f && !momentum_planned) {
    why.s("momentum needs a stage planned with momentum buffers");
  } else {
    code = ErrorCode::kNone;
  }
  if (code != ErrorCode::kNone) {
    refuse(c, code, detail, why.c_str(), meta_of(h));
    return;
  }
  charge(kIdle);
  const Status status = stage_.sgd_step(step.lr, step.momentum, step.weight_decay);
  charge(kCompute);
  if (!status.ok()) {
    executor_failed(status);
    return;
  }
  for (uint32_t t = 0; t < stage_.tensor_count(); ++t) {
    const TensorView w = stage_.weights(t);
    Text what;
    what.s("tensor ").u(t).s(" after the step");
    if (!check_finite(w.data, w.count(), what.c_str(), 0)) return;
  }
  ++steps_;
  if (stage_.is_last()) {
    last_loss_ = batch_.loss_sum / static_cast<float>(batch_.size);
    has_loss_ = true;
  }
  batch_.open = false;
  send_ack(c, h);
}

}  // namespace nmcm::runtime
