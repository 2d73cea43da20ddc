#include "nmcm/tools/w5500_emulator.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace nmcm::tools {
namespace {

// The register map, written out again from the datasheet (§4.1 common, §4.2 socket registers)
// rather than shared with the driver: the emulator is the driver's test oracle, and an oracle
// that includes the code under test agrees with its mistakes.
namespace r {
constexpr std::uint16_t MR = 0x0000;
constexpr std::uint16_t IR = 0x0015;
constexpr std::uint16_t SIR = 0x0017;
constexpr std::uint16_t RTR = 0x0019;
constexpr std::uint16_t RCR = 0x001B;
constexpr std::uint16_t PTIMER = 0x001C;
constexpr std::uint16_t PMRU = 0x0026;
constexpr std::uint16_t UIPR = 0x0028;
constexpr std::uint16_t UPORTR = 0x002C;
constexpr std::uint16_t PHYCFGR = 0x002E;
constexpr std::uint16_t VERSIONR = 0x0039;

constexpr std::uint16_t Sn_MR = 0x0000;
constexpr std::uint16_t Sn_CR = 0x0001;
constexpr std::uint16_t Sn_IR = 0x0002;
constexpr std::uint16_t Sn_SR = 0x0003;
constexpr std::uint16_t Sn_PORT = 0x0004;
constexpr std::uint16_t Sn_DHAR = 0x0006;
constexpr std::uint16_t Sn_DIPR = 0x000C;
constexpr std::uint16_t Sn_DPORT = 0x0010;
constexpr std::uint16_t Sn_TTL = 0x0016;
constexpr std::uint16_t Sn_RXBUF_SIZE = 0x001E;
constexpr std::uint16_t Sn_TXBUF_SIZE = 0x001F;
constexpr std::uint16_t Sn_TX_FSR = 0x0020;
constexpr std::uint16_t Sn_TX_RD = 0x0022;
constexpr std::uint16_t Sn_TX_WR = 0x0024;
constexpr std::uint16_t Sn_RX_RSR = 0x0026;
constexpr std::uint16_t Sn_RX_RD = 0x0028;
constexpr std::uint16_t Sn_RX_WR = 0x002A;
constexpr std::uint16_t Sn_IMR = 0x002C;
constexpr std::uint16_t Sn_FRAG = 0x002D;

constexpr std::uint8_t OPEN = 0x01, LISTEN = 0x02, CONNECT = 0x04, DISCON = 0x08, CLOSE = 0x10,
                       SEND = 0x20, RECV = 0x40;
constexpr std::uint8_t IR_CON = 0x01, IR_DISCON = 0x02, IR_RECV = 0x04, IR_TIMEOUT = 0x08,
                       IR_SENDOK = 0x10;
constexpr std::uint8_t CLOSED = 0x00, INIT = 0x13, LISTEN_ST = 0x14, SYNSENT = 0x15,
                       ESTABLISHED = 0x17, FIN_WAIT = 0x18, CLOSE_WAIT = 0x1C;
}  // namespace r

bool valid_kb(std::uint8_t kb) {
  return kb == 0 || kb == 1 || kb == 2 || kb == 4 || kb == 8 || kb == 16;
}

std::uint32_t steady_ms() {
  using namespace std::chrono;
  return static_cast<std::uint32_t>(
      duration_cast<milliseconds>(steady_clock::now().time_since_epoch()).count());
}

void set_connection_options(int fd, int send_buffer) {
  int one = 1;
  // The W5500 sends a segment per SEND command; it has no Nagle delay to emulate.
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (send_buffer > 0) ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &send_buffer, sizeof send_buffer);
}

}  // namespace

W5500Emulator::W5500Emulator() : W5500Emulator(Options{}) {}

W5500Emulator::W5500Emulator(Options options) : options_(std::move(options)) {
  if (!options_.connect_to) {
    options_.connect_to = [](const Ip4&, std::uint16_t port) {
      return std::optional<std::uint16_t>(port);
    };
  }
  if (!options_.listen_on) options_.listen_on = [](std::uint16_t port) { return port; };
  power_on_defaults();
  if (options_.background_pump_ms > 0) {
    pump_thread_ = std::thread([this] {
      const auto period = std::chrono::milliseconds(options_.background_pump_ms);
      while (!stop_.load()) {
        {
          const std::lock_guard<std::mutex> lock(mutex_);
          pump_locked();
        }
        std::this_thread::sleep_for(period);
      }
    });
  }
}

W5500Emulator::~W5500Emulator() {
  stop_.store(true);
  if (pump_thread_.joinable()) pump_thread_.join();
  for (auto& s : sockets_) close_host(s, true);
  for (auto& [port, fd] : listeners_) ::close(fd);
}

// --- Registers ---------------------------------------------------------------------------------

void W5500Emulator::power_on_defaults() {
  for (auto& s : sockets_) close_host(s, true);
  for (auto& [port, fd] : listeners_) ::close(fd);
  listeners_.clear();
  // Reset values from §4.1 / §4.2.
  common_.fill(0);
  common_[r::RTR] = 0x07;
  common_[r::RTR + 1] = 0xD0;
  common_[r::RCR] = 0x08;
  common_[r::PTIMER] = 0x28;
  common_[r::PMRU] = 0xFF;
  common_[r::PMRU + 1] = 0xFF;
  common_[r::PHYCFGR] = 0xB8;  // RST=1, OPMD=0, OPMDC=111 (auto-negotiation); status bits live
  common_[r::VERSIONR] = 0x04;
  for (auto& s : sockets_) {
    const SocketStats stats = s.stats;  // counters survive a reset: tests read them after
    s = Socket{};
    s.stats = stats;
    std::fill(s.reg.begin() + r::Sn_DHAR, s.reg.begin() + r::Sn_DHAR + 6, 0xFF);
    s.reg[r::Sn_TTL] = 0x80;
    s.reg[r::Sn_RXBUF_SIZE] = 2;
    s.reg[r::Sn_TXBUF_SIZE] = 2;
    s.reg[r::Sn_IMR] = 0xFF;
    s.reg[r::Sn_FRAG] = 0x40;
  }
  tx_mem_.fill(0);
  rx_mem_.fill(0);
  for (int n = 0; n < kSockets; ++n) sync(n);
}

void W5500Emulator::soft_reset() { power_on_defaults(); }

std::uint16_t W5500Emulator::reg16(const Socket& s, std::uint16_t address) const {
  return static_cast<std::uint16_t>((s.reg[address] << 8) | s.reg[address + 1]);
}

void W5500Emulator::set_reg16(Socket& s, std::uint16_t address, std::uint16_t value) {
  s.reg[address] = static_cast<std::uint8_t>(value >> 8);
  s.reg[address + 1] = static_cast<std::uint8_t>(value & 0xFF);
}

std::uint16_t W5500Emulator::tx_size(int n) const {
  const std::uint8_t kb = sockets_[n].reg[r::Sn_TXBUF_SIZE];
  return valid_kb(kb) ? static_cast<std::uint16_t>(kb * 1024u) : 0;
}

std::uint16_t W5500Emulator::rx_size(int n) const {
  const std::uint8_t kb = sockets_[n].reg[r::Sn_RXBUF_SIZE];
  return valid_kb(kb) ? static_cast<std::uint16_t>(kb * 1024u) : 0;
}

// Socket memory is handed out in socket order (§3.3): socket n starts after sockets 0..n-1.
std::size_t W5500Emulator::tx_base(int n) const {
  std::size_t base = 0;
  for (int i = 0; i < n; ++i) base += tx_size(i);
  return base;
}

std::size_t W5500Emulator::rx_base(int n) const {
  std::size_t base = 0;
  for (int i = 0; i < n; ++i) base += rx_size(i);
  return base;
}

void W5500Emulator::sync(int n) {
  Socket& s = sockets_[n];
  s.reg[r::Sn_SR] = s.sr;
  s.reg[r::Sn_IR] = s.ir;
  const bool connected = s.sr == r::ESTABLISHED || s.sr == r::CLOSE_WAIT || s.sr == r::FIN_WAIT;
  const std::uint16_t in_flight = connected ? static_cast<std::uint16_t>(s.tx_end - s.tx_rd) : 0;
  const std::uint16_t size = tx_size(n);
  set_reg16(s, r::Sn_TX_FSR, in_flight > size ? 0 : static_cast<std::uint16_t>(size - in_flight));
  set_reg16(s, r::Sn_TX_RD, s.tx_rd);
  set_reg16(s, r::Sn_RX_RSR, static_cast<std::uint16_t>(s.rx_wr - s.rx_rd));
  set_reg16(s, r::Sn_RX_WR, s.rx_wr);
  std::uint8_t sir = 0;
  for (int i = 0; i < kSockets; ++i) {
    if ((sockets_[i].ir & sockets_[i].reg[r::Sn_IMR]) != 0)
      sir |= static_cast<std::uint8_t>(1 << i);
  }
  common_[r::SIR] = sir;
}

std::uint8_t W5500Emulator::peek(std::uint8_t block, std::uint16_t address) const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return peek_locked(block, address);
}

std::uint8_t W5500Emulator::peek_locked(std::uint8_t block, std::uint16_t address) const {
  if (block == 0) {
    if (address >= kCommonSize) return 0;
    if (address == r::PHYCFGR) {
      return static_cast<std::uint8_t>((common_[r::PHYCFGR] & 0xF8) | (link_up_ ? 0x07 : 0x00));
    }
    return common_[address];
  }
  if ((block & 3) == 1 && address < kSocketRegSize) return sockets_[block >> 2].reg[address];
  return 0;
}

std::uint8_t W5500Emulator::socket_status(int socket) const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return sockets_.at(socket).sr;
}

W5500Emulator::SocketStats W5500Emulator::stats(int socket) const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return sockets_.at(socket).stats;
}

std::uint8_t* W5500Emulator::tx_memory(int socket) {
  const std::lock_guard<std::mutex> lock(mutex_);
  return tx_mem_.data() + tx_base(socket);
}

std::uint8_t* W5500Emulator::rx_memory(int socket) {
  const std::lock_guard<std::mutex> lock(mutex_);
  return rx_mem_.data() + rx_base(socket);
}

std::uint16_t W5500Emulator::tx_memory_size(int socket) const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return tx_size(socket);
}

std::uint16_t W5500Emulator::rx_memory_size(int socket) const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return rx_size(socket);
}

void W5500Emulator::stall_commands(bool stalled) {
  const std::lock_guard<std::mutex> lock(mutex_);
  stall_commands_ = stalled;
}

std::uint32_t W5500Emulator::config_errors() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return config_errors_;
}

std::uint64_t W5500Emulator::frames() const {
  const std::lock_guard<std::mutex> lock(mutex_);
  return frames_;
}

std::uint8_t W5500Emulator::read_byte(std::uint8_t block, std::uint16_t address) {
  const int n = block >> 2;
  switch (block & 3) {
    case 0:
      return block == 0 ? peek_locked(0, address) : 0;  // 00100, 01000, ...: reserved blocks
    case 1: {
      if (address >= kSocketRegSize) return 0;
      Socket& s = sockets_[n];
      if (address == r::Sn_CR) {
        // The chip clears Sn_CR once it has taken the command (§4.2 Sn_CR).
        if (s.cr != 0 && !stall_commands_) {
          if (s.cr_reads_left > 0) {
            --s.cr_reads_left;
          } else {
            s.cr = 0;
          }
        }
        return s.cr;
      }
      if (address == r::Sn_TX_FSR + 1 && reg16(s, r::Sn_TX_FSR) == 0) ++s.stats.tx_full_reads;
      return s.reg[address];
    }
    case 2: {
      const std::uint16_t size = tx_size(n);
      if (size == 0) return 0;
      return tx_mem_[(tx_base(n) + (address & (size - 1))) % kMemory];
    }
    default: {
      const std::uint16_t size = rx_size(n);
      if (size == 0) return 0;
      Socket& s = sockets_[n];
      const std::uint16_t offset = address & (size - 1);
      const std::uint16_t used = static_cast<std::uint16_t>(s.rx_wr - s.rx_rd);
      if (static_cast<std::uint16_t>((offset - s.rx_rd) & (size - 1)) >= used) {
        ++s.stats.rx_overreads;
      }
      return rx_mem_[(rx_base(n) + offset) % kMemory];
    }
  }
}

void W5500Emulator::write_byte(std::uint8_t block, std::uint16_t address, std::uint8_t value) {
  const int n = block >> 2;
  switch (block & 3) {
    case 0:
      if (block == 0) write_common(address, value);
      return;
    case 1:
      write_socket(n, address, value);
      return;
    case 2: {
      const std::uint16_t size = tx_size(n);
      if (size == 0) return;
      Socket& s = sockets_[n];
      const std::uint16_t offset = address & (size - 1);
      const std::uint16_t unsent = static_cast<std::uint16_t>(s.tx_end - s.tx_rd);
      if (static_cast<std::uint16_t>((offset - s.tx_rd) & (size - 1)) < unsent) {
        ++s.stats.tx_overwrites;
      }
      tx_mem_[(tx_base(n) + offset) % kMemory] = value;
      return;
    }
    default:
      return;  // the RX buffer is the chip's to write
  }
}

void W5500Emulator::write_common(std::uint16_t address, std::uint8_t value) {
  if (address >= kCommonSize) return;
  switch (address) {
    case r::MR:
      if ((value & 0x80) != 0) {
        soft_reset();  // MR.RST reads 0 again once the reset is done: here, at once
      } else {
        common_[r::MR] = value;
      }
      return;
    case r::IR:
      common_[r::IR] = static_cast<std::uint8_t>(common_[r::IR] & ~value);
      return;
    case r::SIR:
    case r::VERSIONR:
      return;  // read-only
    case r::PHYCFGR:
      common_[r::PHYCFGR] = static_cast<std::uint8_t>((value & 0xF8) | 0x80);
      return;
    default:
      if (address >= r::UIPR && address < r::UPORTR + 2) return;  // read-only
      common_[address] = value;
  }
}

void W5500Emulator::write_socket(int n, std::uint16_t address, std::uint8_t value) {
  if (address >= kSocketRegSize) return;
  Socket& s = sockets_[n];
  switch (address) {
    case r::Sn_CR:
      s.cr = value;
      s.cr_reads_left = options_.command_latency_reads;
      command(n, value);
      return;
    case r::Sn_IR:
      s.ir = static_cast<std::uint8_t>(s.ir & ~value);  // write 1 to clear
      sync(n);
      return;
    case r::Sn_SR:
    case r::Sn_TX_FSR:
    case r::Sn_TX_FSR + 1:
    case r::Sn_TX_RD:
    case r::Sn_TX_RD + 1:
    case r::Sn_RX_RSR:
    case r::Sn_RX_RSR + 1:
    case r::Sn_RX_WR:
    case r::Sn_RX_WR + 1:
      return;  // read-only
    case r::Sn_TXBUF_SIZE:
    case r::Sn_RXBUF_SIZE: {
      // The 16 KB total is checked at OPEN: while the driver rewrites the sizes one socket at a
      // time, the sum may pass through larger values harmlessly.
      s.reg[address] = value;
      if (!valid_kb(value)) ++config_errors_;
      sync(n);
      return;
    }
    default:
      s.reg[address] = value;
  }
}

// --- Commands ----------------------------------------------------------------------------------

std::uint32_t W5500Emulator::now() const { return options_.clock ? options_.clock() : steady_ms(); }

// ARPTO = RTR x 0.1 ms x (RCR + 1)  (§4.1)
std::uint32_t W5500Emulator::arp_timeout() const {
  const std::uint32_t rtr =
      static_cast<std::uint32_t>((common_[r::RTR] << 8) | common_[r::RTR + 1]);
  return rtr * (common_[r::RCR] + 1u) / 10u;
}

// TCPTO = (sum_{N=0..M} RTR x 2^N + (RCR - M) x RTR_MAX) x 0.1 ms, M the least value with
// RTR x 2^(M+1) > 65535 (at most RCR), RTR_MAX = RTR x 2^M  (§4.1, as printed there).
std::uint32_t W5500Emulator::tcp_timeout() const {
  const std::uint32_t rtr =
      static_cast<std::uint32_t>((common_[r::RTR] << 8) | common_[r::RTR + 1]);
  const std::uint32_t rcr = common_[r::RCR];
  if (rtr == 0) return 0;
  std::uint32_t m = 0;
  while (m < rcr && (rtr << (m + 1)) <= 65535u) ++m;
  std::uint32_t sum = 0;
  for (std::uint32_t k = 0; k <= m; ++k) sum += rtr << k;
  sum += (rcr - m) * (rtr << m);
  return sum / 10u;
}

void W5500Emulator::command(int n, std::uint8_t cmd) {
  Socket& s = sockets_[n];
  ++s.stats.commands;
  const bool tcp = (s.reg[r::Sn_MR] & 0x0F) == 0x01;
  switch (cmd) {
    case r::OPEN: {
      std::size_t tx_total = 0, rx_total = 0;
      for (int i = 0; i < kSockets; ++i) {
        tx_total += tx_size(i);
        rx_total += rx_size(i);
      }
      // §4.2 Sn_TXBUF_SIZE: beyond 16 KB in all, a real chip fails to send or receive.
      if (tx_total > kMemory || rx_total > kMemory || tx_size(n) == 0 || rx_size(n) == 0) {
        ++config_errors_;
      }
      close_host(s, true);
      s.send_pending = s.discon_pending = s.fin_sent = false;
      s.timer = Timer::kNone;
      // TCP only: UDP, IPRAW and MACRAW sockets stay closed (see README.md).
      s.sr = tcp ? r::INIT : r::CLOSED;
      const std::uint16_t p = options_.initial_pointer;
      s.tx_rd = s.tx_end = s.rx_wr = s.rx_rd = p;
      set_reg16(s, r::Sn_TX_WR, p);
      set_reg16(s, r::Sn_RX_RD, p);
      break;
    }
    case r::LISTEN:
      if (s.sr != r::INIT) break;
      {
        const std::uint16_t host_port = options_.listen_on(reg16(s, r::Sn_PORT));
        if (open_listener(host_port)) {
          s.sr = r::LISTEN_ST;
          s.listen_host_port = host_port;
        } else {
          std::fprintf(stderr, "w5500 emulator: socket %d cannot listen on 127.0.0.1:%u\n", n,
                       static_cast<unsigned>(host_port));
          s.sr = r::CLOSED;
        }
      }
      break;
    case r::CONNECT:
      if (s.sr == r::INIT) start_connect(n);
      break;
    case r::DISCON:
      if (s.sr == r::ESTABLISHED || s.sr == r::CLOSE_WAIT) {
        s.discon_pending = true;  // FIN goes after the data still in the TX buffer (pump)
      } else {
        close_host(s, true);
        s.sr = r::CLOSED;
        s.timer = Timer::kNone;
      }
      break;
    case r::CLOSE:
      // No FIN: the chip just forgets the connection. A reset tells the host peer as much.
      close_host(s, !s.fin_sent);
      s.sr = r::CLOSED;
      s.timer = Timer::kNone;
      s.send_pending = s.discon_pending = false;
      break;
    case r::SEND:
      if (s.sr != r::ESTABLISHED && s.sr != r::CLOSE_WAIT) break;
      if (s.send_pending) ++s.stats.send_while_busy;
      s.tx_end = reg16(s, r::Sn_TX_WR);
      if (static_cast<std::uint16_t>(s.tx_end - s.tx_rd) > tx_size(n)) ++s.stats.tx_overwrites;
      s.send_pending = true;
      if (s.tx_end == s.tx_rd) {
        s.send_pending = false;
        s.ir |= r::IR_SENDOK;
      }
      break;
    case r::RECV: {
      const std::uint16_t new_rd = reg16(s, r::Sn_RX_RD);
      const std::uint16_t used = static_cast<std::uint16_t>(s.rx_wr - s.rx_rd);
      if (static_cast<std::uint16_t>(new_rd - s.rx_rd) > used) {
        ++s.stats.bad_recv;
      } else {
        s.rx_rd = new_rd;
      }
      break;
    }
    default:
      break;  // SEND_MAC, SEND_KEEP and unknown commands: not emulated
  }
  sync(n);
}

// --- Host side ---------------------------------------------------------------------------------

bool W5500Emulator::open_listener(std::uint16_t host_port) {
  if (listeners_.count(host_port) != 0) return true;  // several sockets may LISTEN on one port
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(host_port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // A peer dialling this port while nobody listens can hold it for an instant (a loopback socket
  // connected to itself, closed as soon as it is seen): give the bind a moment before failing.
  int bound = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  for (int tries = 0; bound != 0 && errno == EADDRINUSE && tries < 100; ++tries) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    bound = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  }
  if (bound != 0 || ::listen(fd, kSockets) != 0) {
    ::close(fd);
    return false;
  }
  listeners_[host_port] = fd;
  return true;
}

// A port nobody LISTENs on any more refuses connections, as the chip answers such a SYN with RST.
void W5500Emulator::drop_unused_listeners() {
  for (auto it = listeners_.begin(); it != listeners_.end();) {
    bool used = false;
    for (const auto& s : sockets_) {
      used = used || (s.sr == r::LISTEN_ST && s.listen_host_port == it->first);
    }
    if (used) {
      ++it;
    } else {
      ::close(it->second);
      it = listeners_.erase(it);
    }
  }
}

void W5500Emulator::close_host(Socket& s, bool abortive) {
  if (s.fd >= 0) {
    if (abortive) {
      const linger hard{1, 0};  // close with RST, not FIN
      ::setsockopt(s.fd, SOL_SOCKET, SO_LINGER, &hard, sizeof hard);
    }
    ::close(s.fd);
  }
  s.fd = -1;
  s.connecting = false;
  s.refused = false;
  if (s.listen_host_port) {
    s.listen_host_port.reset();
    if (s.sr == r::LISTEN_ST) s.sr = r::CLOSED;
    drop_unused_listeners();
  }
}

void W5500Emulator::start_connect(int n) {
  Socket& s = sockets_[n];
  s.sr = r::SYNSENT;
  Ip4 ip{};
  std::copy(s.reg.begin() + r::Sn_DIPR, s.reg.begin() + r::Sn_DIPR + 4, ip.begin());
  const std::optional<std::uint16_t> host_port = options_.connect_to(ip, reg16(s, r::Sn_DPORT));
  if (!host_port || !link_up_) {
    // Nobody answers the ARP request: Sn_IR.TIMEOUT after ARPTO (§4.1 RCR).
    s.timer = Timer::kArp;
    s.timer_start = now();
    return;
  }
  s.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (s.fd < 0) {
    s.refused = true;
    return;
  }
  set_connection_options(s.fd, options_.host_send_buffer);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(*host_port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(s.fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 ||
      errno == EINPROGRESS) {
    s.connecting = true;  // ESTABLISHED on a later pump, as the SYN/ACK takes a moment
  } else {
    s.refused = true;
  }
}

void W5500Emulator::lose_connection(int n, std::uint8_t ir_bits) {
  Socket& s = sockets_[n];
  close_host(s, true);
  s.sr = r::CLOSED;
  s.ir |= ir_bits;
  s.timer = Timer::kNone;
  s.send_pending = s.discon_pending = false;
}

void W5500Emulator::accept_on(std::uint16_t host_port, int listener_fd) {
  int n = -1;
  for (int i = 0; i < kSockets && n < 0; ++i) {
    if (sockets_[i].sr == r::LISTEN_ST && sockets_[i].listen_host_port == host_port) n = i;
  }
  sockaddr_in peer{};
  socklen_t len = sizeof peer;
  const int fd = ::accept4(listener_fd, reinterpret_cast<sockaddr*>(&peer), &len,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) return;
  if (n < 0) {
    ::close(fd);
    return;
  }
  Socket& s = sockets_[n];
  set_connection_options(fd, options_.host_send_buffer);
  s.fd = fd;
  s.sr = r::ESTABLISHED;
  s.ir |= r::IR_CON;
  const std::uint32_t ip = ntohl(peer.sin_addr.s_addr);
  for (int i = 0; i < 4; ++i) s.reg[r::Sn_DIPR + i] = static_cast<std::uint8_t>(ip >> (24 - 8 * i));
  set_reg16(s, r::Sn_DPORT, ntohs(peer.sin_port));
  s.listen_host_port.reset();
  drop_unused_listeners();
}

void W5500Emulator::flush_tx(int n) {
  Socket& s = sockets_[n];
  const std::uint16_t size = tx_size(n);
  std::uint16_t pending = static_cast<std::uint16_t>(s.tx_end - s.tx_rd);
  if (pending == 0 || size == 0 || s.fd < 0) return;
  if (options_.segment_size > 0 && pending > options_.segment_size) {
    pending = static_cast<std::uint16_t>(options_.segment_size);
  }
  const std::uint16_t offset = s.tx_rd & (size - 1);
  const std::size_t first = std::min<std::size_t>(pending, size - offset);
  std::uint8_t* base = tx_mem_.data() + tx_base(n);
  iovec iov[2] = {{base + offset, first}, {base, pending - first}};
  msghdr msg{};
  msg.msg_iov = iov;
  msg.msg_iovlen = pending > first ? 2 : 1;
  const ssize_t sent = ::sendmsg(s.fd, &msg, MSG_NOSIGNAL);
  if (sent > 0) {
    s.tx_rd = static_cast<std::uint16_t>(s.tx_rd + sent);
    s.stats.bytes_to_host += static_cast<std::uint64_t>(sent);
    if (s.tx_rd == s.tx_end && s.send_pending) {
      s.send_pending = false;
      s.ir |= r::IR_SENDOK;
    }
  } else if (sent < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
    lose_connection(n, r::IR_DISCON);  // EPIPE / ECONNRESET: the peer reset the connection
  }
}

void W5500Emulator::fill_rx(int n) {
  Socket& s = sockets_[n];
  if (s.sr != r::ESTABLISHED && s.sr != r::FIN_WAIT) return;  // CLOSE_WAIT: the FIN was read
  if (s.sr == r::FIN_WAIT) {
    // After our FIN only the peer's FIN matters; data it still sends is dropped (README.md).
    std::uint8_t scratch[4096];
    const ssize_t got = ::recv(s.fd, scratch, sizeof scratch, 0);
    if (got == 0) {
      close_host(s, false);
      s.sr = r::CLOSED;  // FIN_WAIT -> TIME_WAIT -> CLOSED, the last step not emulated
      s.ir |= r::IR_DISCON;
      s.timer = Timer::kNone;
    } else if (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      lose_connection(n, r::IR_DISCON);
    }
    return;
  }
  const std::uint16_t size = rx_size(n);
  const std::uint16_t used = static_cast<std::uint16_t>(s.rx_wr - s.rx_rd);
  if (size == 0 || used >= size) return;  // ring full: the TCP window is closed
  const std::uint16_t space = static_cast<std::uint16_t>(size - used);
  const std::uint16_t offset = s.rx_wr & (size - 1);
  const std::size_t first = std::min<std::size_t>(space, size - offset);
  std::uint8_t* base = rx_mem_.data() + rx_base(n);
  iovec iov[2] = {{base + offset, first}, {base, space - first}};
  const ssize_t got = ::readv(s.fd, iov, space > first ? 2 : 1);
  if (got > 0) {
    s.rx_wr = static_cast<std::uint16_t>(s.rx_wr + got);
    s.ir |= r::IR_RECV;
    s.stats.bytes_from_host += static_cast<std::uint64_t>(got);
  } else if (got == 0) {
    s.sr = r::CLOSE_WAIT;  // the peer's FIN, after all its data (§4.2 Sn_SR, Sn_IR.DISCON)
    s.ir |= r::IR_DISCON;
  } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
    lose_connection(n, r::IR_DISCON);
  }
}

void W5500Emulator::send_fin(int n) {
  Socket& s = sockets_[n];
  s.discon_pending = false;
  s.fin_sent = true;
  if (s.fd >= 0) ::shutdown(s.fd, SHUT_WR);
  if (s.sr == r::CLOSE_WAIT) {
    close_host(s, false);  // LAST_ACK -> CLOSED once the peer ACKs: immediate on loopback
    s.sr = r::CLOSED;
  } else {
    s.sr = r::FIN_WAIT;
  }
}

// Loopback TCP can connect a socket to itself ("simultaneous open") when the port it dials is
// free and in the ephemeral range: it would then hold the port the peer is about to listen on.
// Nobody listens there, so it is what a chip sees as RST: refused.
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

void W5500Emulator::pump_socket(int n, short revents) {
  Socket& s = sockets_[n];
  if (s.connecting) {
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    s.connecting = false;
    if (err == 0 && connected_to_itself(s.fd)) err = ECONNREFUSED;
    if (err == 0) {
      s.sr = r::ESTABLISHED;
      s.ir |= r::IR_CON;
    } else {
      close_host(s, true);  // refused: the chip got RST for its SYN and is CLOSED, no TIMEOUT
      s.sr = r::CLOSED;
    }
    return;
  }
  if ((revents & (POLLOUT | POLLERR | POLLHUP)) != 0) flush_tx(n);
  if (s.fd >= 0 && (revents & (POLLIN | POLLERR | POLLHUP)) != 0) fill_rx(n);
}

void W5500Emulator::check_timers() {
  const std::uint32_t t = now();
  for (int n = 0; n < kSockets; ++n) {
    Socket& s = sockets_[n];
    if (!link_up_ && s.timer == Timer::kNone) {
      // Cable out: nothing is acknowledged, so whatever waits for an answer runs into RTR/RCR.
      if (s.sr == r::SYNSENT) {
        s.timer = Timer::kArp;
        s.timer_start = t;
      } else if ((s.sr == r::ESTABLISHED || s.sr == r::CLOSE_WAIT || s.sr == r::FIN_WAIT) &&
                 (s.send_pending || s.discon_pending)) {
        s.timer = Timer::kTcp;
        s.timer_start = t;
      }
    } else if (link_up_ && s.timer != Timer::kNone && s.fd >= 0) {
      s.timer = Timer::kNone;  // the link is back and the host side carries on
    }
    if (s.timer == Timer::kNone) continue;
    const std::uint32_t limit = s.timer == Timer::kArp ? arp_timeout() : tcp_timeout();
    if (static_cast<std::uint32_t>(t - s.timer_start) >= limit) {
      lose_connection(n, r::IR_TIMEOUT);
      sync(n);
    }
  }
}

void W5500Emulator::pump() {
  const std::lock_guard<std::mutex> lock(mutex_);
  pump_locked();
}

void W5500Emulator::pump_locked() {
  if (in_reset_) return;
  check_timers();
  std::vector<pollfd> fds;
  std::vector<int> owner;  // socket index, or -1 - host port for a listener
  if (link_up_) {
    for (const auto& [port, fd] : listeners_) {
      fds.push_back(pollfd{fd, POLLIN, 0});
      owner.push_back(-1 - static_cast<int>(port));
    }
  }
  for (int n = 0; n < kSockets; ++n) {
    Socket& s = sockets_[n];
    if (s.refused) {
      close_host(s, true);
      s.sr = r::CLOSED;
      sync(n);
      continue;
    }
    if (s.fd < 0 || !link_up_) continue;
    short events = 0;
    if (s.connecting) {
      events = POLLOUT;
    } else {
      if (s.sr == r::FIN_WAIT ||
          (s.sr == r::ESTABLISHED && static_cast<std::uint16_t>(s.rx_wr - s.rx_rd) < rx_size(n))) {
        events |= POLLIN;
      }
      if (s.tx_end != s.tx_rd) events |= POLLOUT;
    }
    if (events != 0) {
      fds.push_back(pollfd{s.fd, events, 0});
      owner.push_back(n);
    }
  }
  if (!fds.empty() && ::poll(fds.data(), fds.size(), 0) > 0) {
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      if (owner[i] < 0) {
        const auto port = static_cast<std::uint16_t>(-1 - owner[i]);
        const auto it = listeners_.find(port);
        if (it != listeners_.end() && it->second == fds[i].fd) accept_on(port, fds[i].fd);
      } else if (sockets_[owner[i]].fd == fds[i].fd) {
        pump_socket(owner[i], fds[i].revents);
      }
    }
  }
  for (int n = 0; n < kSockets; ++n) {
    Socket& s = sockets_[n];
    if (link_up_ && s.discon_pending && s.tx_end == s.tx_rd) send_fin(n);
    sync(n);
  }
}

void W5500Emulator::set_link(bool up) {
  const std::lock_guard<std::mutex> lock(mutex_);
  link_up_ = up;
  check_timers();
}

// --- SPI ---------------------------------------------------------------------------------------

void W5500Emulator::select(bool selected) {
  const std::lock_guard<std::mutex> lock(mutex_);
  selected_ = selected;
  if (!selected || in_reset_) {
    phase_ = Phase::kIdle;
    return;
  }
  ++frames_;
  pump_locked();
  phase_ = Phase::kAddressHigh;
}

void W5500Emulator::reset(bool asserted) {
  const std::lock_guard<std::mutex> lock(mutex_);
  if (asserted && !in_reset_) power_on_defaults();
  in_reset_ = asserted;
  phase_ = Phase::kIdle;
}

bool W5500Emulator::transfer(const std::uint8_t* tx, std::uint8_t* rx, std::size_t n) {
  const std::lock_guard<std::mutex> lock(mutex_);
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint8_t in = tx != nullptr ? tx[i] : 0;
    std::uint8_t out = 0xFF;  // MISO is not driven outside a frame: the pull-up reads 0xFF
    if (selected_ && !in_reset_) data_byte(in, &out);
    if (rx != nullptr) rx[i] = out;
  }
  return true;
}

void W5500Emulator::data_byte(std::uint8_t in, std::uint8_t* out) {
  *out = 0x00;
  switch (phase_) {
    case Phase::kIdle:
      return;
    case Phase::kAddressHigh:
      address_ = static_cast<std::uint16_t>(in << 8);
      phase_ = Phase::kAddressLow;
      return;
    case Phase::kAddressLow:
      address_ = static_cast<std::uint16_t>(address_ | in);
      phase_ = Phase::kControl;
      return;
    case Phase::kControl: {
      block_ = static_cast<std::uint8_t>(in >> 3);
      write_ = (in & 0x04) != 0;
      static constexpr int kFixed[4] = {-1, 1, 2, 4};  // OM: VDM, FDM 1/2/4 bytes (§2.2.2)
      fixed_left_ = kFixed[in & 0x03];
      phase_ = Phase::kData;
      return;
    }
    case Phase::kData:
      if (write_) {
        write_byte(block_, address_, in);
      } else {
        *out = read_byte(block_, address_);
      }
      address_ = static_cast<std::uint16_t>(address_ + 1);  // the offset address auto-increments
      if (fixed_left_ > 0 && --fixed_left_ == 0) phase_ = Phase::kAddressHigh;  // next FDM frame
      return;
  }
}

}  // namespace nmcm::tools
