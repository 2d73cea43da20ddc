// The host's NodeNetwork and NodeClock (`sim` nodes, the runtime's tests): POSIX TCP sockets from a
// fixed pool, poll() for NodeNetwork::wait, CLOCK_MONOTONIC in nanoseconds for the tick counters.
#pragma once

#include <cstdint>

#include "nmcm/net/posix_tcp.h"
#include "nmcm/runtime/node.h"

namespace nmcm::runtime {

class PosixNetwork final : public NodeNetwork {
 public:
  // Every inbound connection, the downstream one, and one to accept and close when full.
  static constexpr uint32_t kPoolSize = kMaxInbound + 2;

  PosixNetwork() = default;
  PosixNetwork(const PosixNetwork&) = delete;
  PosixNetwork& operator=(const PosixNetwork&) = delete;

  net::IoStatus listen(const Endpoint& endpoint) override;
  net::Transport* accept() override;
  net::IoStatus connect(const Endpoint& endpoint, uint32_t timeout_ms,
                        net::Transport** out) override;
  void release(net::Transport* transport) override;
  void stop_listening() override;
  void wait(uint32_t timeout_ms) override;

  // The port listened on (the one the system chose when the endpoint's port was 0).
  uint16_t port() const { return listener_.port(); }

 private:
  net::PosixTcp* take();

  net::PosixListener listener_;
  net::PosixTcp pool_[kPoolSize];
  bool used_[kPoolSize] = {};
};

class PosixClock final : public NodeClock {
 public:
  PosixClock();
  uint32_t millis() override;
  uint64_t ticks() override;  // nanoseconds since construction
  uint32_t tick_hz() override { return 1000000000u; }

 private:
  uint64_t origin_ns_;
};

}  // namespace nmcm::runtime
