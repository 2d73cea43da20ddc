#include "nmcm/runtime/w5500_network.h"

#include <cstring>

namespace nmcm::runtime {

using drivers::w5500::Ip4;
using net::IoResult;
using net::IoStatus;

// --- W5500Link --------------------------------------------------------------------------------

IoStatus W5500Link::send_all(const void* data, std::size_t len, std::uint32_t timeout_ms) {
  return stream_.send_all(data, len, timeout_ms);
}

IoResult W5500Link::recv_some(void* data, std::size_t capacity, std::uint32_t timeout_ms) {
  if (capacity == 0) return IoResult{IoStatus::kOk, 0};
  const std::size_t held = static_cast<std::size_t>(ahead_end_ - ahead_begin_);
  if (held == 0) {
    if (end_ != IoStatus::kOk) return IoResult{end_, 0};
    return stream_.recv_some(data, capacity, timeout_ms);
  }
  auto* out = static_cast<std::uint8_t*>(data);
  const std::size_t n = capacity < held ? capacity : held;
  std::memcpy(out, ahead_ + ahead_begin_, n);
  ahead_begin_ = static_cast<std::uint8_t>(ahead_begin_ + n);
  if (ahead_begin_ == ahead_end_) ahead_begin_ = ahead_end_ = 0;
  if (n == capacity || end_ != IoStatus::kOk) return IoResult{IoStatus::kOk, n};
  // Room left: whatever else the chip holds, without waiting (a frame's data part arrives in
  // one read, not look-ahead-sized pieces).
  const IoResult more = stream_.recv_some(out + n, capacity - n, 0);
  if (more.status == IoStatus::kOk) return IoResult{IoStatus::kOk, n + more.bytes};
  if (more.status != IoStatus::kTimeout) end_ = more.status;  // reported on the next call
  return IoResult{IoStatus::kOk, n};
}

void W5500Link::close() {
  stream_.close();
  ahead_begin_ = ahead_end_ = 0;
  end_ = IoStatus::kOk;
}

bool W5500Link::readable() {
  if (ahead_end_ != ahead_begin_ || end_ != IoStatus::kOk) return true;
  const IoResult r = stream_.recv_some(ahead_, sizeof ahead_, 0);
  if (r.status == IoStatus::kOk) {
    ahead_begin_ = 0;
    ahead_end_ = static_cast<std::uint8_t>(r.bytes);
    return true;
  }
  if (r.status == IoStatus::kTimeout) return false;
  end_ = r.status;
  return true;
}

// --- W5500Network -----------------------------------------------------------------------------

static_assert(W5500Network::kFirstInbound + W5500Network::kInbound <= drivers::w5500::kSocketCount,
              "more sockets than the chip has");
static_assert(W5500Network::kDownstreamKb + W5500Network::kInbound * W5500Network::kInboundKb <= 16,
              "the W5500 has 16 KB of buffer each way");
static_assert(W5500Network::kInbound * W5500Network::kLastStageInboundKb <= 16,
              "the W5500 has 16 KB of buffer each way");

void W5500Network::plan_buffers(bool has_downstream, drivers::w5500::Config* chip) {
  for (std::uint8_t s = 0; s < drivers::w5500::kSocketCount; ++s) {
    std::uint8_t kb = 0;
    if (s == kDownstreamSocket) {
      kb = has_downstream ? kDownstreamKb : 0;
    } else if (s >= kFirstInbound && s < kFirstInbound + kInbound) {
      kb = has_downstream ? kInboundKb : kLastStageInboundKb;
    }
    chip->tx_kb[s] = kb;
    chip->rx_kb[s] = kb;
  }
}

W5500Network::W5500Network(drivers::w5500::W5500& chip, const W5500NetworkConfig& config)
    : chip_(chip),
      config_(config),
      links_{{chip, kDownstreamSocket},
             {chip, kFirstInbound},
             {chip, kFirstInbound + 1},
             {chip, kFirstInbound + 2},
             {chip, kFirstInbound + 3}} {
  static_assert(kLinks == 5, "links_ is initialised for one downstream and four inbound sockets");
}

int W5500Network::index_of(const net::Transport* transport) const {
  for (std::uint8_t i = 0; i < kLinks; ++i) {
    if (&links_[i] == transport) return i;
  }
  return -1;
}

int W5500Network::socket_of(const net::Transport* transport) const {
  const int i = index_of(transport);
  return i < 0 ? -1 : links_[i].stream().socket();
}

void W5500Network::log(const char* what, std::uint8_t index, const char* why) const {
  if (config_.log == nullptr) return;
  // "w5500 socket 3: <what>: <why>" without printf (not on every board's libc).
  char line[120];
  std::size_t n = 0;
  auto put = [&](const char* s) {
    while (*s != '\0' && n + 1 < sizeof line) line[n++] = *s++;
  };
  const char digit[2] = {static_cast<char>('0' + links_[index].stream().socket()), '\0'};
  put("w5500 socket ");
  put(digit);
  put(": ");
  put(what);
  if (why != nullptr && *why != '\0') {
    put(": ");
    put(why);
  }
  line[n] = '\0';
  config_.log(line);
}

void W5500Network::relisten(std::uint8_t index) {
  W5500Link& link = links_[index];
  const bool ok = link.stream().listen(port_) == IoStatus::kOk;
  if (!ok && !deaf_[index]) log("cannot listen", index, link.stream().last_error());
  if (ok && deaf_[index]) log("listening again", index, nullptr);
  deaf_[index] = !ok;
}

IoStatus W5500Network::listen(const Endpoint& endpoint) {
  if (!chip_.initialized()) return IoStatus::kError;
  port_ = endpoint.port;
  listening_ = true;
  // Listening succeeds if any inbound socket listens: a peer dialling at this very moment can
  // catch a socket between its LISTEN and our check, and accept() gives deaf sockets another try.
  bool any = false;
  for (std::uint8_t i = 1; i < kLinks; ++i) {
    if (handed_[i]) continue;
    relisten(i);
    if (!deaf_[i]) any = true;
  }
  return any ? IoStatus::kOk : IoStatus::kError;
}

net::Transport* W5500Network::accept() {
  if (!listening_) return nullptr;
  for (std::uint8_t i = 1; i < kLinks; ++i) {
    if (handed_[i]) continue;
    W5500Link& link = links_[i];
    drivers::w5500::W5500Stream& stream = link.stream();
    // A socket whose LISTEN failed before (or was closed under us) is given another chance.
    if (!stream.listening() && !stream.connected()) relisten(i);
    if (stream.accept(0) == IoStatus::kOk) {
      handed_[i] = true;
      return &link;
    }
  }
  return nullptr;
}

IoStatus W5500Network::connect(const Endpoint& endpoint, std::uint32_t timeout_ms,
                               net::Transport** out) {
  *out = nullptr;
  if (!config_.has_downstream || handed_[0]) return IoStatus::kError;
  W5500Link& link = links_[0];
  Ip4 ip{};
  std::memcpy(ip.octets, endpoint.ip, sizeof ip.octets);
  link.close();  // a fresh start: no look-ahead or end left from an earlier connection
  const IoStatus status = link.stream().connect(ip, endpoint.port, timeout_ms);
  if (status != IoStatus::kOk) return status;
  handed_[0] = true;
  *out = &link;
  return IoStatus::kOk;
}

void W5500Network::release(net::Transport* transport) {
  const int i = index_of(transport);
  if (i < 0) return;
  links_[i].close();
  handed_[i] = false;
  if (i > 0 && listening_) relisten(static_cast<std::uint8_t>(i));
}

void W5500Network::stop_listening() {
  listening_ = false;
  for (std::uint8_t i = 1; i < kLinks; ++i) {
    if (!handed_[i]) links_[i].close();
  }
}

// One look at every socket: bytes or an end on a connection in use, a peer on a listening one.
bool W5500Network::something_happened() {
  for (std::uint8_t i = 0; i < kLinks; ++i) {
    if (handed_[i]) {
      if (links_[i].readable()) return true;
    } else if (i > 0 && listening_ && links_[i].stream().accept(0) == IoStatus::kOk) {
      return true;  // now connected; accept() hands it out
    }
  }
  return false;
}

void W5500Network::wait(std::uint32_t timeout_ms) {
  const drivers::w5500::IdleHook idle =
      config_.wait_idle != nullptr ? config_.wait_idle : chip_.config().idle;
  if (config_.clock == nullptr) {  // no clock: one look and one idle turn (early is allowed)
    if (!something_happened() && idle != nullptr) idle();
    return;
  }
  // As the driver's deadlines: more than timeout_ms whole milliseconds, so that the wait lasts at
  // least its timeout even when it started late in a clock tick; 0 is one look.
  const std::uint32_t start = config_.clock();
  for (;;) {
    if (something_happened()) return;
    if (timeout_ms == 0 || static_cast<std::uint32_t>(config_.clock() - start) > timeout_ms) return;
    if (idle != nullptr) idle();
  }
}

}  // namespace nmcm::runtime
