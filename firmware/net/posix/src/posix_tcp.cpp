#include "nmcm/net/posix_tcp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>

namespace nmcm::net {
namespace {

#ifdef MSG_NOSIGNAL
constexpr int kSendFlags = MSG_NOSIGNAL;  // a closed peer is an error code, not a SIGPIPE
#else
constexpr int kSendFlags = 0;
#endif

uint64_t now_ms() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000u + static_cast<uint64_t>(ts.tv_nsec) / 1000000u;
}

// Milliseconds left until `deadline` (0 when past), as poll() takes them.
int remaining(uint64_t deadline) {
  const uint64_t now = now_ms();
  if (now >= deadline) return 0;
  const uint64_t left = deadline - now;
  return left > 0x7FFFFFFF ? 0x7FFFFFFF : static_cast<int>(left);
}

// Waits for `events` on fd until the deadline: 1 ready, 0 timeout, -1 error.
int wait_for(int fd, short events, uint64_t deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, remaining(deadline));
    if (n > 0) return 1;
    if (n == 0) return 0;
    if (errno != EINTR) return -1;
  }
}

bool set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL, 0);
  return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

void set_options(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
#ifdef SO_NOSIGPIPE
  ::setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one);
#endif
}

bool make_address(const char* ip, uint16_t port, sockaddr_in* addr) {
  *addr = sockaddr_in{};
  addr->sin_family = AF_INET;
  addr->sin_port = htons(port);
  return ::inet_pton(AF_INET, ip, &addr->sin_addr) == 1;
}

}  // namespace

void PosixTcp::adopt(int fd) {
  close();
  fd_ = fd;
  set_nonblocking(fd_);
  set_options(fd_);
}

// Loopback TCP can connect a socket to itself ("simultaneous open") when the port it dials is
// free and in the ephemeral range; it would then occupy the port its peer is about to listen on.
// Nobody listens there, so it counts as refused.
static bool connected_to_itself(int fd) {
  sockaddr_in local{};
  sockaddr_in peer{};
  socklen_t a = sizeof local;
  socklen_t b = sizeof peer;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&local), &a) != 0 ||
      ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &b) != 0) {
    return false;
  }
  return local.sin_port == peer.sin_port && local.sin_addr.s_addr == peer.sin_addr.s_addr;
}

IoStatus PosixTcp::connect(const char* ip, uint16_t port, uint32_t timeout_ms) {
  close();
  sockaddr_in addr{};
  if (!make_address(ip, port, &addr)) return IoStatus::kError;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return IoStatus::kError;
  if (!set_nonblocking(fd)) {
    ::close(fd);
    return IoStatus::kError;
  }
  const uint64_t deadline = now_ms() + timeout_ms;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    if (errno == ECONNREFUSED) {
      ::close(fd);
      return IoStatus::kRefused;
    }
    if (errno != EINPROGRESS && errno != EINTR) {
      ::close(fd);
      return IoStatus::kError;
    }
    const int ready = wait_for(fd, POLLOUT, deadline);
    int err = 0;
    socklen_t len = sizeof err;
    if (ready <= 0 || ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      ::close(fd);
      if (ready == 0) return IoStatus::kTimeout;
      return err == ECONNREFUSED ? IoStatus::kRefused : IoStatus::kError;
    }
  }
  if (connected_to_itself(fd)) {
    ::close(fd);
    return IoStatus::kRefused;
  }
  fd_ = fd;
  set_options(fd_);
  return IoStatus::kOk;
}

IoStatus PosixTcp::connect_retry(const char* ip, uint16_t port, uint32_t timeout_ms,
                                 uint32_t retry_ms) {
  const uint64_t deadline = now_ms() + timeout_ms;
  for (;;) {
    const int left = remaining(deadline);
    const IoStatus status = connect(ip, port, static_cast<uint32_t>(left));
    if (status != IoStatus::kRefused) return status;
    if (remaining(deadline) <= static_cast<int>(retry_ms)) return IoStatus::kRefused;
    timespec pause{static_cast<time_t>(retry_ms / 1000),
                   static_cast<long>(retry_ms % 1000) * 1000000L};
    ::nanosleep(&pause, nullptr);
  }
}

IoStatus PosixTcp::send_all(const void* data, size_t len, uint32_t timeout_ms) {
  if (fd_ < 0) return IoStatus::kClosed;
  const uint64_t deadline = now_ms() + timeout_ms;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  while (len > 0) {
    const ssize_t n = ::send(fd_, p, len, kSendFlags);
    if (n > 0) {
      p += n;
      len -= static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      const int ready = wait_for(fd_, POLLOUT, deadline);
      if (ready == 0) return IoStatus::kTimeout;
      if (ready < 0) return IoStatus::kError;
      continue;
    }
    return (errno == EPIPE || errno == ECONNRESET) ? IoStatus::kClosed : IoStatus::kError;
  }
  return IoStatus::kOk;
}

IoResult PosixTcp::recv_some(void* data, size_t capacity, uint32_t timeout_ms) {
  if (fd_ < 0) return IoResult{IoStatus::kClosed, 0};
  if (capacity == 0) return IoResult{IoStatus::kOk, 0};
  const uint64_t deadline = now_ms() + timeout_ms;
  for (;;) {
    const ssize_t n = ::recv(fd_, data, capacity, 0);
    if (n > 0) return IoResult{IoStatus::kOk, static_cast<size_t>(n)};
    if (n == 0) return IoResult{IoStatus::kClosed, 0};
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      const int ready = wait_for(fd_, POLLIN, deadline);
      if (ready == 0) return IoResult{IoStatus::kTimeout, 0};
      if (ready < 0) return IoResult{IoStatus::kError, 0};
      continue;
    }
    return IoResult{errno == ECONNRESET ? IoStatus::kClosed : IoStatus::kError, 0};
  }
}

void PosixTcp::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

IoStatus PosixListener::listen(const char* ip, uint16_t port, int backlog) {
  close();
  sockaddr_in addr{};
  if (!make_address(ip, port, &addr)) return IoStatus::kError;
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return IoStatus::kError;
  int one = 1;
  // A node restarted by `nmcm apply` must get its port back while old connections linger.
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd, backlog) != 0 || !set_nonblocking(fd) ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return IoStatus::kError;
  }
  fd_ = fd;
  port_ = ntohs(addr.sin_port);
  return IoStatus::kOk;
}

IoStatus PosixListener::accept(PosixTcp* out, uint32_t timeout_ms) {
  if (fd_ < 0) return IoStatus::kClosed;
  const uint64_t deadline = now_ms() + timeout_ms;
  for (;;) {
    const int fd = ::accept(fd_, nullptr, nullptr);
    if (fd >= 0) {
      out->adopt(fd);
      return IoStatus::kOk;
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return IoStatus::kError;
    const int ready = wait_for(fd_, POLLIN, deadline);
    if (ready == 0) return IoStatus::kTimeout;
    if (ready < 0) return IoStatus::kError;
  }
}

void PosixListener::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  port_ = 0;
}

}  // namespace nmcm::net
