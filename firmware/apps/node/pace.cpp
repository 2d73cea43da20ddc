#include "pace.h"

#include <time.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "nmcm/net/frame.h"

namespace nmcm::app {
namespace {

// A piece that starts within this long of the previous one's end follows it directly: the gap
// is the host's own bookkeeping or a sleep's overshoot, not time the modelled MCU would idle.
constexpr std::int64_t kBackToBackNs = 500'000;

std::int64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

void sleep_until_ns(std::int64_t deadline) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(deadline / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(deadline % 1'000'000'000);
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, nullptr) == EINTR) {
  }
}

// The next whitespace-separated word of `*p` into `word` (at most `size` - 1 characters).
bool next_word(const char** p, char* word, std::size_t size) {
  const char* s = *p;
  while (*s == ' ' || *s == '\t') ++s;
  std::size_t n = 0;
  while (*s != '\0' && *s != ' ' && *s != '\t' && *s != '\n' && *s != '#') {
    if (n + 1 >= size) return false;
    word[n++] = *s++;
  }
  word[n] = '\0';
  *p = s;
  return n > 0;
}

bool next_number(const char** p, double* out) {
  char word[64];
  if (!next_word(p, word, sizeof word)) return false;
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(word, &end);
  if (*end != '\0' || errno != 0 || !(v >= 0) || v > 1e9) return false;
  *out = v;
  return true;
}

bool next_count(const char** p, std::uint32_t* out, std::uint32_t limit) {
  double v = 0;
  if (!next_number(p, &v) || v != static_cast<double>(static_cast<std::uint32_t>(v)) || v > limit) {
    return false;
  }
  *out = static_cast<std::uint32_t>(v);
  return true;
}

bool rest_is_empty(const char* s) {
  while (*s == ' ' || *s == '\t') ++s;
  return *s == '\0' || *s == '\n' || *s == '#';
}

}  // namespace

double PaceTable::send_s(std::uint32_t frame_bytes) const {
  double wire = 0;
  if (wire_bps > 0) {
    const std::uint32_t segments =
        segment_bytes == 0 ? 1 : (frame_bytes + segment_bytes - 1) / segment_bytes;
    const double bits = 8.0 * (frame_bytes + static_cast<double>(segments == 0 ? 1 : segments) *
                                                 segment_overhead_bytes);
    wire = bits / wire_bps;
  }
  return send.at(frame_bytes) + wire;
}

double PaceTable::receive_s(std::uint32_t frame_bytes) const { return receive.at(frame_bytes); }

double PaceTable::work_s(StagePhase phase, std::uint32_t layer, std::uint32_t n) const {
  switch (phase) {
    case StagePhase::kForward:
      return layer < layers ? forward[layer].at(n) : 0;
    case StagePhase::kBackward:
      return layer < layers ? backward[layer].at(n) : 0;
    case StagePhase::kLoss:
      return loss.at(n);
    case StagePhase::kStep:
      return step_s;
  }
  return 0;
}

bool parse_pace_table(const char* text, PaceTable* out, char* error, std::size_t error_size) {
  *out = PaceTable{};
  bool seen_layers = false;
  std::uint32_t line = 0;
  const char* p = text;
  while (*p != '\0') {
    ++line;
    const char* s = p;
    char key[32];
    const char* problem = nullptr;
    if (next_word(&s, key, sizeof key)) {
      const std::string_view k(key);
      std::uint32_t layer = 0;
      PaceLinear* linear = nullptr;
      if (k == "scale") {
        if (!next_number(&s, &out->scale) || !(out->scale > 0)) problem = "scale: a number > 0";
      } else if (k == "layers") {
        if (!next_count(&s, &out->layers, kMaxLayers)) problem = "layers: a count up to the max";
        seen_layers = !problem;
      } else if (k == "forward" || k == "backward") {
        if (!seen_layers) {
          problem = "a layer before `layers`";
        } else if (!next_count(&s, &layer, out->layers - 1) || out->layers == 0) {
          problem = "a layer index of the stage";
        } else {
          linear = (k == "forward" ? out->forward : out->backward) + layer;
        }
      } else if (k == "loss") {
        linear = &out->loss;
      } else if (k == "send") {
        linear = &out->send;
      } else if (k == "receive") {
        linear = &out->receive;
      } else if (k == "step") {
        if (!next_number(&s, &out->step_s)) problem = "step: seconds";
      } else if (k == "wire") {
        if (!next_number(&s, &out->wire_bps) || !next_count(&s, &out->segment_bytes, 1u << 16) ||
            out->segment_bytes == 0 || !next_count(&s, &out->segment_overhead_bytes, 1u << 16)) {
          problem = "wire: bits per second, segment bytes, overhead bytes per segment";
        }
      } else {
        problem = "unknown directive";
      }
      if (problem == nullptr && linear != nullptr &&
          (!next_number(&s, &linear->per_call_s) || !next_number(&s, &linear->per_sample_s))) {
        problem = "two numbers: seconds per call and per sample (per frame and per byte)";
      }
      // Work (not frames) may add the seconds of a micro-batch of 1, 2 and 3 samples mod 4.
      if (problem == nullptr && linear != nullptr && linear != &out->send &&
          linear != &out->receive && !rest_is_empty(s)) {
        for (int r = 1; r < 4 && problem == nullptr; ++r) {
          if (!next_number(&s, &linear->per_residue_s[r])) {
            problem = "three more numbers: seconds for 1, 2 and 3 samples mod 4";
          }
        }
      }
      if (problem == nullptr && !rest_is_empty(s)) problem = "more words than the directive takes";
    }
    if (problem != nullptr) {
      std::snprintf(error, error_size, "line %u: %s", line, problem);
      return false;
    }
    while (*p != '\0' && *p != '\n') ++p;
    if (*p == '\n') ++p;
  }
  if (!seen_layers) {
    std::snprintf(error, error_size, "no `layers` line");
    return false;
  }
  return true;
}

Pacer::Pacer(const PaceTable& table) : table_(table) {
#ifdef __linux__
  // Sleeps end within microseconds of their deadline, not the default 50 us of timer slack.
  prctl(PR_SET_TIMERSLACK, 1000UL, 0UL, 0UL, 0UL);
#endif
}

void Pacer::attach(Stage& stage) { stage.set_probe(probe, this); }

void Pacer::begin() {
  const std::int64_t now = now_ns();
  start_ns_ = now >= end_ns_ && now - end_ns_ <= kBackToBackNs ? end_ns_ : now;
}

void Pacer::end(double modelled_s) {
  ++totals_.pieces;
  totals_.modelled_s += modelled_s;
  end_ns_ = start_ns_ + static_cast<std::int64_t>(modelled_s * table_.scale * 1e9);
  if (now_ns() < end_ns_) sleep_until_ns(end_ns_);
}

void Pacer::probe(void* self, StagePhase phase, std::uint32_t layer, std::uint32_t n, bool done) {
  auto* pacer = static_cast<Pacer*>(self);
  if (!done) {
    pacer->begin();
  } else {
    pacer->end(pacer->table_.work_s(phase, layer, n));
  }
}

void PacedTransport::wrap(net::Transport* inner, Pacer* pacer) {
  inner_ = inner;
  pacer_ = pacer;
  send_left_ = 0;
  head_have_ = 0;
  recv_left_ = 0;
}

net::IoStatus PacedTransport::send_all(const void* data, std::size_t len,
                                       std::uint32_t timeout_ms) {
  if (send_left_ == 0 && len >= net::kHeaderSize) {
    // The first bytes of a frame: FrameSender always puts the whole header in one call.
    net::FrameHeader h{};
    std::uint32_t detail = 0;
    if (net::check_header(static_cast<const std::uint8_t*>(data), UINT32_MAX, &h, &detail) ==
        net::ErrorCode::kNone) {
      const std::size_t frame = net::kHeaderSize + h.payload_length + net::kCrcSize;
      send_left_ = frame;
      ++pacer_->totals().frames_sent;
      pacer_->spend(pacer_->table().send_s(static_cast<std::uint32_t>(frame)));
    }
  }
  send_left_ = len < send_left_ ? send_left_ - len : 0;
  pacer_->totals().bytes_sent += len;
  return inner_->send_all(data, len, timeout_ms);
}

net::IoResult PacedTransport::recv_some(void* data, std::size_t capacity,
                                        std::uint32_t timeout_ms) {
  const net::IoResult r = inner_->recv_some(data, capacity, timeout_ms);
  if (r.status == net::IoStatus::kOk && r.bytes > 0) {
    pacer_->totals().bytes_received += r.bytes;
    count_received(static_cast<const std::uint8_t*>(data), r.bytes);
  }
  return r;
}

void PacedTransport::count_received(const std::uint8_t* data, std::size_t n) {
  while (n > 0) {
    if (recv_left_ > 0) {
      const std::size_t take = n < recv_left_ ? n : recv_left_;
      recv_left_ -= take;
      data += take;
      n -= take;
      if (recv_left_ == 0) {
        const std::size_t frame = net::kHeaderSize + head_frame_payload_ + net::kCrcSize;
        ++pacer_->totals().frames_received;
        pacer_->spend(pacer_->table().receive_s(static_cast<std::uint32_t>(frame)));
      }
      continue;
    }
    const std::size_t take = n < net::kHeaderSize - head_have_ ? n : net::kHeaderSize - head_have_;
    std::memcpy(head_ + head_have_, data, take);
    head_have_ += take;
    data += take;
    n -= take;
    if (head_have_ < net::kHeaderSize) break;
    head_have_ = 0;
    net::FrameHeader h{};
    std::uint32_t detail = 0;
    if (net::check_header(head_, UINT32_MAX, &h, &detail) != net::ErrorCode::kNone) {
      continue;  // not a frame: the node refuses it; nothing to pace
    }
    head_frame_payload_ = h.payload_length;
    recv_left_ = h.payload_length + net::kCrcSize;
  }
}

net::Transport* PacedNetwork::wrap(net::Transport* inner) {
  if (inner == nullptr) return nullptr;
  for (PacedTransport& slot : slots_) {
    if (slot.inner() == nullptr) {
      slot.wrap(inner, &pacer_);
      return &slot;
    }
  }
  inner_.release(inner);  // more connections than a node keeps: refused as if none were free
  return nullptr;
}

net::Transport* PacedNetwork::accept() { return wrap(inner_.accept()); }

net::IoStatus PacedNetwork::connect(const runtime::Endpoint& endpoint, std::uint32_t timeout_ms,
                                    net::Transport** out) {
  net::Transport* inner = nullptr;
  const net::IoStatus status = inner_.connect(endpoint, timeout_ms, &inner);
  *out = status == net::IoStatus::kOk ? wrap(inner) : nullptr;
  if (status == net::IoStatus::kOk && *out == nullptr) return net::IoStatus::kError;
  return status;
}

void PacedNetwork::release(net::Transport* transport) {
  for (PacedTransport& slot : slots_) {
    if (&slot == transport) {
      inner_.release(slot.inner());
      slot.wrap(nullptr, nullptr);
      return;
    }
  }
  inner_.release(transport);
}

}  // namespace nmcm::app
