// GET_WEIGHTS / SET_WEIGHTS (docs/protocol.md, "GET_WEIGHTS", "WEIGHTS, SET_WEIGHTS") and the
// validity of the weights after a chunk that failed its CRC.
#include "nmcm/runtime/node.h"

#include "text.h"

namespace nmcm::runtime {

using net::DecodeEvent;
using net::ErrorCode;
using net::MsgType;
using net::TensorKind;

float* Node::tensor_data(uint32_t tensor, TensorKind kind) {
  if (tensor >= stage_.tensor_count()) return nullptr;
  switch (kind) {
    case TensorKind::kParameter:
      return stage_.weights(tensor).data;
    case TensorKind::kGradient:
      return stage_.grads(tensor).data;
    case TensorKind::kMomentum: {
      // The executor has no accessor for momentum: its buffer is where the plan put it.
      const StageLayout& layout = stage_.layout();
      if ((layout.header.flags & kFlagMomentum) == 0 || layout.momentum[tensor] == kNoBuffer) {
        return nullptr;
      }
      return static_cast<float*>(static_cast<void*>(config_.arena + layout.momentum[tensor]));
    }
  }
  return nullptr;
}

// A chunk of `kind` was cut short or failed its CRC after overwriting part of a tensor: which
// values are garbage is unknown, so every tensor of that kind must be set again.
void Node::invalidate_weights(uint8_t kind) {
  if (kind > 1) return;
  for (uint32_t t = 0; t < stage_.tensor_count(); ++t) valid_upto_[kind][t] = 0;
  if (!weights_invalid_) {
    log(kind == 0 ? "weights invalid until every tensor is set again"
                  : "momentum buffers invalid until every tensor is set again");
  }
  weights_invalid_ = true;
}

bool Node::weights_valid() const {
  for (uint32_t kind = 0; kind < 2; ++kind) {
    for (uint32_t t = 0; t < stage_.tensor_count(); ++t) {
      if (valid_upto_[kind][t] < stage_.layout().tensors[t].count) return false;
    }
  }
  return true;
}

DecodeEvent Node::route_set_weights(Connection& c) {
  net::WeightsHead head{};
  net::decode(c.decoder.fixed(), &head);
  Text why;
  if (c.peer != Peer::kCoordinator) {
    why.s("SET_WEIGHTS from the ").s(peer_name(c));
    return discard(c, ErrorCode::kUnexpected, 0, why.c_str());
  }
  if (batch_.open) {
    why.s("SET_WEIGHTS while batch ").u(batch_.id).s(" is open");
    return discard(c, ErrorCode::kUnexpected, batch_.id, why.c_str());
  }
  if (head.kind == TensorKind::kGradient) {
    return discard(c, ErrorCode::kUnexpected, 0, "accumulated gradients cannot be set");
  }
  if (head.tensor >= stage_.tensor_count()) {
    why.s("tensor ").u(head.tensor).s(": this stage has ").u(stage_.tensor_count());
    return discard(c, ErrorCode::kUnexpected, stage_.tensor_count(), why.c_str());
  }
  float* base = tensor_data(head.tensor, head.kind);
  if (base == nullptr) {
    return discard(c, ErrorCode::kUnexpected, 0, "this stage has no momentum buffers");
  }
  const uint32_t total = stage_.layout().tensors[head.tensor].count;
  if (head.total != total) {
    why.s("tensor ").u(head.tensor).s(" of ").u(head.total).s(" elements, this stage's has ");
    why.u(total);
    return discard(c, ErrorCode::kStageMismatch, total, why.c_str());
  }
  // offset + count <= total was check 9: the chunk fits the tensor.
  c.sink = Sink::kWeights;
  c.sink_kind = static_cast<uint8_t>(head.kind);
  return c.decoder.accept_payload(base + head.offset, size_t{total - head.offset} * 4u);
}

void Node::on_set_weights(Connection& c) {
  net::WeightsHead head{};
  net::decode(c.decoder.fixed(), &head);
  const uint32_t kind = static_cast<uint32_t>(head.kind);
  const float* chunk = tensor_data(head.tensor, head.kind) + head.offset;
  const uint32_t bad = first_non_finite(chunk, head.count);
  if (bad < head.count) {
    // The chunk is in the tensor already: the tensor is not the one the sender meant either.
    invalidate_weights(static_cast<uint8_t>(kind));
    Text why;
    why.s(chunk[bad] != chunk[bad] ? "NaN" : "infinity").s(" in SET_WEIGHTS of tensor ");
    why.u(head.tensor).s(" at element ").u(head.offset + bad);
    refuse(c, ErrorCode::kNonFinite, head.offset + bad, why.c_str(), meta_of(c.decoder.header()));
    return;
  }
  uint32_t& upto = valid_upto_[kind][head.tensor];
  // Chunks in order (as senders send them) make a tensor whole again.
  if (head.offset <= upto && head.offset + head.count > upto) upto = head.offset + head.count;
  if (weights_invalid_ && weights_valid()) {
    weights_invalid_ = false;
    failed_ = false;
    log("every tensor set again: weights valid");
  }
  send_ack(c, c.decoder.header());
}

void Node::on_get_weights(Connection& c) {
  net::GetWeights get{};
  net::decode(c.decoder.fixed(), &get);
  const net::FrameHeader& h = c.decoder.header();
  Text why;
  if (get.tensor >= stage_.tensor_count()) {
    why.s("tensor ").u(get.tensor).s(": this stage has ").u(stage_.tensor_count());
    refuse(c, ErrorCode::kUnexpected, stage_.tensor_count(), why.c_str(), meta_of(h));
    return;
  }
  const float* base = tensor_data(get.tensor, get.kind);
  if (base == nullptr) {
    refuse(c, ErrorCode::kUnexpected, 0, "this stage has no momentum buffers", meta_of(h));
    return;
  }
  const uint32_t total = stage_.layout().tensors[get.tensor].count;
  if (get.offset >= total) {
    why.s("offset ").u(get.offset).s(" is beyond tensor ").u(get.tensor).s(" of ").u(total);
    refuse(c, ErrorCode::kUnexpected, total, why.c_str(), meta_of(h));
    return;
  }
  // min(count, total - offset, (the peer's max_payload - 16) / 4)
  uint32_t n = total - get.offset;
  if (get.count < n) n = get.count;
  const uint32_t fits = (c.peer_limit - net::WeightsHead::kSize) / 4u;
  if (fits < n) n = fits;
  uint8_t fixed[net::WeightsHead::kSize];
  net::encode(net::WeightsHead{get.tensor, get.kind, get.offset, n, total}, fixed);
  send(c, MsgType::kWeights, net::kNoBatch, fixed, sizeof fixed, base + get.offset, n * 4u);
}

}  // namespace nmcm::runtime
