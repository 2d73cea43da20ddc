// The host's Transport: POSIX TCP sockets (`sim` nodes, host tests). Sockets are non-blocking and
// every wait is a poll() with a deadline, so no call blocks longer than its timeout. TCP_NODELAY
// is set on every connection: frames are small and latency-bound (a gradient waits for its
// activation), so Nagle's delay would only add to every step.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/net/transport.h"

namespace nmcm::net {

class PosixTcp final : public Transport {
 public:
  PosixTcp() = default;
  ~PosixTcp() { close(); }
  PosixTcp(const PosixTcp&) = delete;
  PosixTcp& operator=(const PosixTcp&) = delete;

  // One attempt to connect to ip:port (dotted IPv4) within timeout_ms. kRefused if nobody
  // listens there; connect_retry() keeps trying.
  IoStatus connect(const char* ip, uint16_t port, uint32_t timeout_ms);
  // Tries connect() every `retry_ms` while it is refused, for at most `timeout_ms` in all: how a
  // node reaches a downstream neighbour that may not be listening yet. kRefused if nobody
  // listened in that time.
  IoStatus connect_retry(const char* ip, uint16_t port, uint32_t timeout_ms,
                         uint32_t retry_ms = 100);

  IoStatus send_all(const void* data, size_t len, uint32_t timeout_ms) override;
  IoResult recv_some(void* data, size_t capacity, uint32_t timeout_ms) override;
  void close() override;

  bool is_open() const { return fd_ >= 0; }
  int fd() const { return fd_; }  // for a poll() over several connections

 private:
  friend class PosixListener;
  void adopt(int fd);

  int fd_ = -1;
};

class PosixListener {
 public:
  PosixListener() = default;
  ~PosixListener() { close(); }
  PosixListener(const PosixListener&) = delete;
  PosixListener& operator=(const PosixListener&) = delete;

  // Listens on ip:port (dotted IPv4; port 0 picks a free one, see port()).
  IoStatus listen(const char* ip, uint16_t port, int backlog = 4);
  // Waits up to timeout_ms for a connection and hands it to *out (closing what *out held).
  IoStatus accept(PosixTcp* out, uint32_t timeout_ms);
  void close();

  uint16_t port() const { return port_; }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

}  // namespace nmcm::net
