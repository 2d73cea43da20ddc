#include "nmcm/runtime/uart_network.h"

#include <cstring>

namespace nmcm::runtime {

using net::IoResult;
using net::IoStatus;

// 0xA5 occurs nowhere else in the preamble (the rest is ASCII), so a mismatch never has to look
// back for a preamble that began inside the bytes matched so far.
const uint8_t kLinkPrefix[kLinkPreambleSize - 1] = {0xA5, 'N', 'M', 'C', 'M', '-', 'U', 'A',
                                                    'R',  'T', '-', 'L', 'I', 'N', 'K'};

namespace {

constexpr uint8_t kPrefixSize = sizeof kLinkPrefix;
// ACCEPT and RESET are 16 bytes into a stream that the host drains as they are written: this only
// bounds the case of a peer that stopped reading.
constexpr uint32_t kPreambleSendMs = 100;

bool is_signal(uint8_t byte) {
  return byte == static_cast<uint8_t>(LinkSignal::kOpen) ||
         byte == static_cast<uint8_t>(LinkSignal::kAccept) ||
         byte == static_cast<uint8_t>(LinkSignal::kReset);
}

}  // namespace

void UartLink::attach(UartChannel* channel, Side side, NodeClock* clock) {
  channel_ = channel;
  side_ = side;
  clock_ = clock;
}

IoStatus UartLink::send_all(const void* data, size_t len, uint32_t timeout_ms) {
  if (state_ != State::kOpen || channel_ == nullptr) return IoStatus::kClosed;
  const auto* bytes = static_cast<const uint8_t*>(data);
  const uint32_t start = clock_->millis();
  size_t sent = 0;
  while (sent < len) {
    sent += channel_->write_some(bytes + sent, len - sent);
    if (sent < len && clock_->millis() - start >= timeout_ms) return IoStatus::kTimeout;
  }
  return IoStatus::kOk;
}

IoResult UartLink::recv_some(void* data, size_t capacity, uint32_t timeout_ms) {
  const uint32_t start = clock_ != nullptr ? clock_->millis() : 0;
  for (;;) {
    service();
    if (count_ > 0 && (state_ == State::kOpen || state_ == State::kPeerGone)) {
      auto* out = static_cast<uint8_t*>(data);
      size_t n = 0;
      while (n < capacity && count_ > 0) {
        out[n++] = buffer_[head_];
        head_ = (head_ + 1) % kBufferSize;
        --count_;
      }
      return IoResult{IoStatus::kOk, n};
    }
    if (state_ != State::kOpen) return IoResult{IoStatus::kClosed, 0};
    if (clock_->millis() - start >= timeout_ms) return IoResult{IoStatus::kTimeout, 0};
  }
}

bool UartLink::service() {
  if (channel_ == nullptr) return false;
  bool moved = false;
  // A connection the peer has left is not read further: the bytes behind its OPEN belong to the
  // next connection, which starts when the node lets go of this one.
  while (state_ != State::kPeerGone && count_ < kBufferSize) {
    uint8_t byte = 0;
    if (channel_->read_some(&byte, 1) == 0) break;
    moved = true;
    feed(byte);
  }
  return moved;
}

// Every byte is data the moment it arrives, also while it may be the start of a preamble: held
// back, the last bytes of a frame that happen to begin like one (a CRC ending in 0xA5, say) would
// wait for a next byte that the peer sends only after the node answered that frame. When a
// preamble does complete, the prefix bytes the node has not read yet are taken back; any it did
// read belong to a connection that is over.
void UartLink::feed(uint8_t byte) {
  if (matched_ == kPrefixSize && is_signal(byte)) {
    count_ -= matched_pushed_ < count_ ? matched_pushed_ : count_;
    matched_ = 0;
    matched_pushed_ = 0;
    signal(static_cast<LinkSignal>(byte));
    return;
  }
  if (matched_ < kPrefixSize && byte == kLinkPrefix[matched_]) {
    ++matched_;
  } else {
    matched_pushed_ = 0;
    matched_ = byte == kLinkPrefix[0] ? 1 : 0;
  }
  deliver(byte);
}

void UartLink::deliver(uint8_t byte) {
  switch (state_) {
    case State::kOpen:
    case State::kPending:  // the peer may send its HELLO before our ACCEPT reaches it
      push(byte);
      if (matched_ > 0) ++matched_pushed_;
      break;
    case State::kIdle:
      // A byte that may start an OPEN is not stray (yet).
      if (side_ == Side::kListener && matched_ == 0) stray_byte();
      break;
    case State::kConnecting:  // left over from an earlier connection
    case State::kPeerGone:    // not reached: the link is not read in this state
      break;
  }
}

void UartLink::signal(LinkSignal kind) {
  if (side_ == Side::kListener) {
    if (kind != LinkSignal::kOpen) return;
    reset_sent_ = false;
    if (state_ == State::kOpen) {
      state_ = State::kPeerGone;  // the node reads what is left, then the stream ends
      reopened_ = true;
    } else if (state_ == State::kIdle || state_ == State::kPending) {
      clear();  // a repeated OPEN: the earlier one's bytes are void
      state_ = State::kPending;
    }
    return;
  }
  if (kind == LinkSignal::kAccept && state_ == State::kConnecting) {
    clear();
    state_ = State::kOpen;
  } else if (kind == LinkSignal::kReset && state_ == State::kOpen) {
    state_ = State::kPeerGone;
  }
  // Anything else is late (an ACCEPT of an attempt given up, a RESET sent before our OPEN).
}

void UartLink::push(uint8_t byte) {
  buffer_[(head_ + count_) % kBufferSize] = byte;
  ++count_;
}

void UartLink::clear() {
  head_ = 0;
  count_ = 0;
  matched_pushed_ = 0;
}

bool UartLink::send_preamble(LinkSignal kind) {
  uint8_t preamble[kLinkPreambleSize];
  std::memcpy(preamble, kLinkPrefix, kPrefixSize);
  preamble[kPrefixSize] = static_cast<uint8_t>(kind);
  const uint32_t start = clock_->millis();
  size_t sent = 0;
  while (sent < sizeof preamble) {
    sent += channel_->write_some(preamble + sent, sizeof preamble - sent);
    if (sent < sizeof preamble && clock_->millis() - start >= kPreambleSendMs) return false;
  }
  return true;
}

// Bytes for a connection the listener does not have: tell the sender its connection is over,
// as TCP answers a segment for no connection with RST.
void UartLink::stray_byte() {
  const uint32_t now = clock_->millis();
  if (reset_sent_ && now - last_reset_ms_ < kResetIntervalMs) return;
  reset_sent_ = true;
  last_reset_ms_ = now;
  send_preamble(LinkSignal::kReset);
}

bool UartLink::take_pending() {
  if (side_ != Side::kListener || state_ != State::kPending || held_by_node_) return false;
  state_ = State::kOpen;
  held_by_node_ = true;
  send_preamble(LinkSignal::kAccept);
  return true;
}

void UartLink::start_connect() {
  clear();
  state_ = State::kConnecting;
  send_preamble(LinkSignal::kOpen);
}

bool UartLink::claim_open() {
  if (state_ != State::kOpen || held_by_node_) return false;
  held_by_node_ = true;
  return true;
}

void UartLink::release() {
  held_by_node_ = false;
  clear();
  state_ = reopened_ ? State::kPending : State::kIdle;
  reopened_ = false;
}

UartNetwork::UartNetwork(UartChannel* const* inbound, uint32_t inbound_count,
                         UartChannel* downstream, NodeClock& clock)
    : clock_(clock) {
  inbound_count_ = inbound_count < kMaxInbound ? inbound_count : kMaxInbound;
  for (uint32_t i = 0; i < inbound_count_; ++i) {
    inbound_[i].attach(inbound[i], UartLink::Side::kListener, &clock_);
  }
  if (downstream != nullptr) downstream_.attach(downstream, UartLink::Side::kConnector, &clock_);
}

IoStatus UartNetwork::listen(const Endpoint&) {
  listening_ = true;
  return IoStatus::kOk;
}

net::Transport* UartNetwork::accept() {
  if (!listening_) return nullptr;
  for (uint32_t i = 0; i < inbound_count_; ++i) {
    UartLink& link = inbound_[i];
    link.service();
    if (link.take_pending()) return &link;
  }
  return nullptr;
}

IoStatus UartNetwork::connect(const Endpoint&, uint32_t timeout_ms, net::Transport** out) {
  *out = nullptr;
  if (!downstream_.attached() || downstream_.held()) return IoStatus::kError;
  // Whatever arrived since the last attempt first: a late ACCEPT of it is as good as a new one.
  downstream_.service();
  if (downstream_.claim_open()) {
    *out = &downstream_;
    return IoStatus::kOk;
  }
  downstream_.start_connect();
  const uint32_t start = clock_.millis();
  do {
    downstream_.service();
    if (downstream_.claim_open()) {
      *out = &downstream_;
      return IoStatus::kOk;
    }
  } while (clock_.millis() - start < timeout_ms);
  // No ACCEPT: nobody on the other end yet (the host drops what a stream without a peer is sent).
  // The link stays connecting, so that an ACCEPT arriving later is taken by the next attempt.
  return IoStatus::kRefused;
}

void UartNetwork::release(net::Transport* transport) {
  UartLink* link = find(transport);
  if (link != nullptr) link->release();
}

void UartNetwork::stop_listening() { listening_ = false; }

void UartNetwork::wait(uint32_t timeout_ms) {
  const uint32_t start = clock_.millis();
  for (;;) {
    if (busy()) {
      last_activity_ms_ = clock_.millis();
      return;
    }
    const uint32_t now = clock_.millis();
    if (now - start >= timeout_ms) return;
    if (idle_ != nullptr && now - last_activity_ms_ >= kSpinMs) idle_(idle_context_);
  }
}

// Whether the node has something to do: bytes or an end of stream on a connection it holds, a
// connection to accept. Reads every UART on the way; a byte that moved counts too.
bool UartNetwork::busy() {
  bool moved = false;
  for (uint32_t i = 0; i < inbound_count_; ++i) {
    UartLink& link = inbound_[i];
    moved = link.service() || moved;
    if (link.held() ? link.has_data() || link.state() != UartLink::State::kOpen
                    : link.state() == UartLink::State::kPending && listening_) {
      return true;
    }
  }
  if (downstream_.attached()) {
    // An ACCEPT for a connect attempt is not work for now: the node asks again on its own
    // schedule (every 100 ms while it tries), which its wait timeouts already allow for.
    moved = downstream_.service() || moved;
    if (downstream_.held() &&
        (downstream_.has_data() || downstream_.state() != UartLink::State::kOpen)) {
      return true;
    }
  }
  return moved;
}

UartLink* UartNetwork::find(net::Transport* transport) {
  for (uint32_t i = 0; i < inbound_count_; ++i) {
    if (&inbound_[i] == transport) return &inbound_[i];
  }
  return transport == &downstream_ ? &downstream_ : nullptr;
}

}  // namespace nmcm::runtime
