#include "nmcm/runtime/posix_network.h"

#include <poll.h>
#include <time.h>

#include <cerrno>
#include <cstdio>

namespace nmcm::runtime {
namespace {

// Dotted IPv4, as PosixTcp takes it.
void format_ip(const Endpoint& endpoint, char (&out)[16]) {
  std::snprintf(out, sizeof out, "%u.%u.%u.%u", endpoint.ip[0], endpoint.ip[1], endpoint.ip[2],
                endpoint.ip[3]);
}

uint64_t monotonic_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000u + static_cast<uint64_t>(ts.tv_nsec);
}

}  // namespace

net::PosixTcp* PosixNetwork::take() {
  for (uint32_t i = 0; i < kPoolSize; ++i) {
    if (!used_[i]) {
      used_[i] = true;
      return &pool_[i];
    }
  }
  return nullptr;
}

net::IoStatus PosixNetwork::listen(const Endpoint& endpoint) {
  char ip[16];
  format_ip(endpoint, ip);
  return listener_.listen(ip, endpoint.port);
}

net::Transport* PosixNetwork::accept() {
  if (listener_.fd() < 0) return nullptr;
  net::PosixTcp* tcp = take();
  if (tcp == nullptr) return nullptr;
  if (listener_.accept(tcp, 0) == net::IoStatus::kOk) return tcp;
  release(tcp);
  return nullptr;
}

net::IoStatus PosixNetwork::connect(const Endpoint& endpoint, uint32_t timeout_ms,
                                    net::Transport** out) {
  *out = nullptr;
  net::PosixTcp* tcp = take();
  if (tcp == nullptr) return net::IoStatus::kError;
  char ip[16];
  format_ip(endpoint, ip);
  const net::IoStatus status = tcp->connect(ip, endpoint.port, timeout_ms);
  if (status != net::IoStatus::kOk) {
    release(tcp);
    return status;
  }
  *out = tcp;
  return status;
}

void PosixNetwork::release(net::Transport* transport) {
  for (uint32_t i = 0; i < kPoolSize; ++i) {
    if (&pool_[i] == transport) {
      pool_[i].close();
      used_[i] = false;
    }
  }
}

void PosixNetwork::stop_listening() { listener_.close(); }

void PosixNetwork::wait(uint32_t timeout_ms) {
  pollfd fds[kPoolSize + 1];
  nfds_t n = 0;
  if (listener_.fd() >= 0) fds[n++] = pollfd{listener_.fd(), POLLIN, 0};
  for (uint32_t i = 0; i < kPoolSize; ++i) {
    if (used_[i] && pool_[i].is_open()) fds[n++] = pollfd{pool_[i].fd(), POLLIN, 0};
  }
  const int ms = timeout_ms > 0x7FFFFFFFu ? 0x7FFFFFFF : static_cast<int>(timeout_ms);
  if (::poll(fds, n, ms) < 0 && errno != EINTR) {
    // poll itself failed (never with valid fds): do not spin.
    timespec pause{0, 1000000L};
    ::nanosleep(&pause, nullptr);
  }
}

PosixClock::PosixClock() : origin_ns_(monotonic_ns()) {}

uint32_t PosixClock::millis() {
  return static_cast<uint32_t>((monotonic_ns() - origin_ns_) / 1000000u);
}

uint64_t PosixClock::ticks() { return monotonic_ns() - origin_ns_; }

}  // namespace nmcm::runtime
