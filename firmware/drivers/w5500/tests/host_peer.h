// Test helpers: the clock and idle hook the driver runs on, byte patterns, and the host side of a
// connection (plain POSIX sockets on loopback) with every wait bounded.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>
#include <vector>

#include "nmcm/drivers/w5500/w5500.h"
#include "nmcm/net/transport.h"

// Readable statuses in GoogleTest failure messages (found by argument-dependent lookup).
namespace nmcm::net {
const char* io_status_text(IoStatus status);
inline void PrintTo(IoStatus status, std::ostream* os) { *os << io_status_text(status); }
}  // namespace nmcm::net

namespace nmcm::drivers::w5500 {
inline void PrintTo(Status status, std::ostream* os) { *os << status_name(status); }
}  // namespace nmcm::drivers::w5500

namespace nmcm::drivers::w5500::test {

// The host's steady clock in milliseconds, as a plain function (the driver's Clock).
std::uint32_t clock_ms();
// The driver's idle hook in tests: give the peer threads the CPU.
void yield();

// n reproducible pseudo-random bytes.
std::vector<std::uint8_t> pattern(std::size_t n, std::uint32_t seed);

// A loopback port that was free a moment ago.
std::uint16_t free_port();

class HostSocket {
 public:
  HostSocket() = default;
  explicit HostSocket(int fd) : fd_(fd) {}
  ~HostSocket() { close(); }
  HostSocket(HostSocket&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  HostSocket& operator=(HostSocket&& other) noexcept;
  HostSocket(const HostSocket&) = delete;
  HostSocket& operator=(const HostSocket&) = delete;

  // Connects to 127.0.0.1:port (blocking, at most timeout_ms).
  static HostSocket connect(std::uint16_t port, int timeout_ms);

  bool valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  std::uint16_t local_port() const;
  bool send_all(const std::uint8_t* data, std::size_t n, int timeout_ms);
  // Reads exactly n bytes (false on timeout, EOF or error).
  bool recv_exact(std::uint8_t* data, std::size_t n, int timeout_ms);
  // Reads until EOF; *clean is false if the stream ended with a reset or an error or timed out.
  std::vector<std::uint8_t> recv_to_eof(int timeout_ms, bool* clean);
  // Ends the connection with RST instead of FIN.
  void reset();
  void close();

 private:
  int fd_ = -1;
};

class HostListener {
 public:
  // Listens on 127.0.0.1:port (0: any free port). receive_buffer > 0 sets SO_RCVBUF on the
  // listening socket before listen(), so that accepted connections advertise a small window.
  explicit HostListener(std::uint16_t port = 0, int receive_buffer = 0);
  ~HostListener();
  HostListener(const HostListener&) = delete;
  HostListener& operator=(const HostListener&) = delete;

  std::uint16_t port() const { return port_; }
  HostSocket accept(int timeout_ms);

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
};

}  // namespace nmcm::drivers::w5500::test
