// qemu-mps2 port: the real ARM images under `qemu-system-arm -M mps2-an386` (Cortex-M4) or
// `-M mps2-an500` (Cortex-M7). The log and the exit status go through ARM semihosting (QEMU:
// `-semihosting-config enable=on,target=native`); the nodes' streams through host files (named
// pipes, host_link.cpp) or the CMSDK UARTs; the W5500 does not exist here, so its bus fails every
// transfer.
#include <cstddef>
#include <cstdint>

#include "nmcm/port/cortex_m.h"
#include "nmcm/port/line.h"
#include "nmcm/port/port.h"
#include "nmcm/port/qemu_mps2.h"
#include "nmcm/port/vectors.h"

// QEMU gives the MPS2 AN385-family images (AN385, AN386, AN500) a 32-interrupt NVIC
// (hw/arm/mps2.c, "num-irq").
NMCM_VECTOR_TABLE(32);

namespace nmcm::port {
namespace {

namespace cm = cortex_m;

// ARM semihosting (Semihosting for AArch32 and AArch64, version 2.0): the operation number in r0,
// the parameter in r1, `bkpt 0xAB` on M-profile; the result comes back in r0.
constexpr std::uint32_t kSysOpen = 0x01;
constexpr std::uint32_t kSysClose = 0x02;
constexpr std::uint32_t kSysWrite0 = 0x04;
constexpr std::uint32_t kSysWrite = 0x05;
constexpr std::uint32_t kSysRead = 0x06;
constexpr std::uint32_t kSysGetCmdline = 0x15;
constexpr std::uint32_t kSysExit = 0x18;
constexpr std::uint32_t kSysExitExtended = 0x20;
constexpr std::uint32_t kSysElapsed = 0x30;
constexpr std::uint32_t kSysTickFreq = 0x31;
constexpr std::uint32_t kAdpStoppedApplicationExit = 0x20026;
constexpr std::uint32_t kAdpStoppedRunTimeErrorUnknown = 0x20023;

std::uint32_t semihost(std::uint32_t operation, const void* parameter) {
  std::uint32_t result;
  __asm volatile(
      "mov r0, %1\n"
      "mov r1, %2\n"
      "bkpt 0xAB\n"
      "mov %0, r0\n"
      : "=r"(result)
      : "r"(operation), "r"(parameter)
      : "r0", "r1", "memory");
  return result;
}

// CMSDK APB UART (ARM DDI 0479C, "APB UART"; QEMU hw/char/cmsdk-apb-uart.c): DATA, STATE
// (TXFULL [0], RXFULL [1]), CTRL (TX_EN [0], RX_EN [1]), BAUDDIV (at least 16). Bases of UARTs
// 0..4 on the AN385-family images (hw/arm/mps2.c).
constexpr std::uintptr_t kUartBases[] = {0x40004000, 0x40005000, 0x40006000, 0x40007000,
                                         0x40009000};
constexpr std::uintptr_t kUartData = 0x00;
constexpr std::uintptr_t kUartState = 0x04;
constexpr std::uintptr_t kUartCtrl = 0x08;
constexpr std::uintptr_t kUartBauddiv = 0x10;
constexpr std::uint32_t kStateTxFull = 1u << 0;
constexpr std::uint32_t kStateRxFull = 1u << 1;
constexpr std::uint32_t kCtrlTxEn = 1u << 0;
constexpr std::uint32_t kCtrlRxEn = 1u << 1;
// The rate only matters to a real serial backend; 115200 like the boards' log.
constexpr std::uint32_t kUartDivider = qemu::kSysclkHz / 115200;

// CMSDK APB timer (ARM DDI 0479C, "APB timer"; QEMU hw/timer/cmsdk-apb-timer.c): CTRL (EN [0]),
// VALUE (counts down at SYSCLK), RELOAD. Timers 0 and 1 of the AN385-family images.
constexpr std::uintptr_t kTimerBases[] = {0x40000000, 0x40001000};
constexpr std::uintptr_t kTimerCtrl = 0x00;
constexpr std::uintptr_t kTimerValue = 0x04;
constexpr std::uintptr_t kTimerReload = 0x08;
constexpr std::uint32_t kTimerCtrlEnable = 1u << 0;
constexpr std::uint32_t kTimerTop = 0xFFFFFFFFu;

std::uintptr_t timer_base(unsigned index) {
  if (index >= sizeof(kTimerBases) / sizeof(kTimerBases[0])) {
    fatal("qemu-mps2 has timers 0 and 1 only");
  }
  return kTimerBases[index];
}

qemu::UartStream g_uarts[] = {qemu::UartStream{kUartBases[0]}, qemu::UartStream{kUartBases[1]},
                              qemu::UartStream{kUartBases[2]}, qemu::UartStream{kUartBases[3]},
                              qemu::UartStream{kUartBases[4]}};

// No W5500 under QEMU: a bus whose transfers all fail, so that a driver probing it reports
// "no W5500" through its normal error path.
class AbsentSpiBus final : public SpiBus {
 public:
  void select(bool) override {}
  bool transfer(const std::uint8_t*, std::uint8_t*, std::size_t) override { return false; }
  void reset(bool) override {}
};

AbsentSpiBus g_w5500;

}  // namespace

void init() {
  cm::start_systick(qemu::kSysclkHz);
  // QEMU emulates no DWT cycle counter (it reads 0): cycles() says so, instructions() counts.
}

void log(const char* text) {
  semihost(kSysWrite0, text);
  semihost(kSysWrite0, "\n");
}

std::uint32_t cycles() { return 0; }

SpiBus& w5500_bus() { return g_w5500; }

void fatal(const char* why) {
  Line<224> line;
  log(line.text("fatal: ").text(why).c_str());
  qemu::exit(1);
}

namespace cortex_m {

void on_main_return(int code) { qemu::exit(code); }

}  // namespace cortex_m

namespace qemu {

std::uint64_t instructions() { return cm::systick_ticks() * kNanosecondsPerTick; }

namespace {

// The semihosting command line (at most 255 bytes of it), empty if there is none.
const char* command_line() {
  static char text[256];
  static bool read = false;
  if (!read) {
    read = true;
    // SYS_GET_CMDLINE: r1 points at {buffer, length}; returns 0 and the length used.
    std::uint32_t block[2] = {static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(text)),
                              sizeof(text)};
    if (semihost(kSysGetCmdline, block) != 0) text[0] = '\0';
    text[sizeof(text) - 1] = '\0';
  }
  return text;
}

// The first word of the command line that starts with `prefix`: the rest of it, else null.
const char* word_after(const char* prefix) {
  for (const char* p = command_line(); *p != '\0';) {
    while (*p == ' ') ++p;
    const char* w = prefix;
    while (*w != '\0' && *p == *w) {
      ++p;
      ++w;
    }
    if (*w == '\0') return p;
    while (*p != ' ' && *p != '\0') ++p;
  }
  return nullptr;
}

}  // namespace

bool has_argument(const char* word) {
  const char* rest = word_after(word);
  return rest != nullptr && (*rest == ' ' || *rest == '\0');
}

bool number_argument(const char* name, std::uint32_t* value) {
  Line<64> prefix;
  const char* digits = word_after(prefix.text(name).text("=").c_str());
  if (digits == nullptr || *digits < '0' || *digits > '9') return false;
  std::uint64_t n = 0;
  for (; *digits >= '0' && *digits <= '9'; ++digits) {
    n = n * 10 + static_cast<std::uint64_t>(*digits - '0');
    if (n > 0xFFFFFFFFu) return false;
  }
  if (*digits != ' ' && *digits != '\0') return false;
  *value = static_cast<std::uint32_t>(n);
  return true;
}

bool text_argument(const char* name, char* out, std::size_t capacity) {
  Line<64> prefix;
  const char* text = word_after(prefix.text(name).text("=").c_str());
  if (text == nullptr || capacity == 0) return false;
  std::size_t n = 0;
  for (; text[n] != ' ' && text[n] != '\0'; ++n) {
    if (n + 1 >= capacity) return false;
    out[n] = text[n];
  }
  out[n] = '\0';
  return true;
}

void exit(int code) {
  if (code == 0) {
    // A32/T32 SYS_EXIT takes the reason itself, and ApplicationExit means status 0.
    semihost(kSysExit, reinterpret_cast<const void*>(kAdpStoppedApplicationExit));
  } else {
    // SYS_EXIT_EXTENDED carries a status; QEMU implements it for A32/T32 too.
    const std::uint32_t block[2] = {kAdpStoppedApplicationExit, static_cast<std::uint32_t>(code)};
    semihost(kSysExitExtended, block);
    // An implementation without it: at least exit non-zero.
    semihost(kSysExit, reinterpret_cast<const void*>(kAdpStoppedRunTimeErrorUnknown));
  }
  for (;;) {
    __asm volatile("wfi");  // not reached under QEMU
  }
}

std::uint64_t host_nanoseconds() {
  // SYS_TICKFREQ once (QEMU: 10^9, it counts in nanoseconds); 0 means no SYS_ELAPSED either.
  static std::uint32_t frequency = 0;
  static bool asked = false;
  if (!asked) {
    asked = true;
    const std::uint32_t f = semihost(kSysTickFreq, nullptr);
    frequency = f == 0xFFFFFFFFu ? 0 : f;
  }
  std::uint32_t block[2] = {0, 0};  // SYS_ELAPSED: the 64-bit tick count, low word first
  if (frequency == 0 || semihost(kSysElapsed, block) != 0) {
    return cm::systick_ticks() * kNanosecondsPerTick;
  }
  const std::uint64_t ticks = (static_cast<std::uint64_t>(block[1]) << 32) | block[0];
  return frequency == 1000000000u
             ? ticks
             : ticks / frequency * 1000000000u + (ticks % frequency) * 1000000000u / frequency;
}

bool HostFile::open(const char* path, Mode mode) {
  close();
  std::size_t length = 0;
  while (path[length] != '\0') ++length;
  // SYS_OPEN: {path, mode, length of the path}; a handle, or -1.
  const std::uint32_t block[3] = {
      static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(path)),
      static_cast<std::uint32_t>(mode), static_cast<std::uint32_t>(length)};
  handle_ = static_cast<std::int32_t>(semihost(kSysOpen, block));
  return handle_ >= 0;
}

std::size_t HostFile::read(std::uint8_t* data, std::size_t n) {
  if (handle_ < 0 || n == 0) return 0;
  // SYS_READ: {handle, buffer, length}; returns how many bytes were NOT read.
  const std::uint32_t block[3] = {
      static_cast<std::uint32_t>(handle_),
      static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(data)),
      static_cast<std::uint32_t>(n)};
  const std::uint32_t left = semihost(kSysRead, block);
  return left >= n ? 0 : n - left;
}

bool HostFile::write(const std::uint8_t* data, std::size_t n) {
  if (handle_ < 0) return false;
  // SYS_WRITE: {handle, buffer, length}; returns how many bytes were NOT written.
  while (n > 0) {
    const std::uint32_t block[3] = {
        static_cast<std::uint32_t>(handle_),
        static_cast<std::uint32_t>(reinterpret_cast<std::uintptr_t>(data)),
        static_cast<std::uint32_t>(n)};
    const std::uint32_t left = semihost(kSysWrite, block);
    if (left >= n) return false;
    data += n - left;
    n = left;
  }
  return true;
}

void HostFile::close() {
  if (handle_ < 0) return;
  const std::uint32_t block[1] = {static_cast<std::uint32_t>(handle_)};
  semihost(kSysClose, block);
  handle_ = -1;
}

void restart_timer(unsigned index) {
  const std::uintptr_t base = timer_base(index);
  cm::reg(base + kTimerCtrl) = 0;
  cm::reg(base + kTimerReload) = kTimerTop;
  cm::reg(base + kTimerValue) = kTimerTop;
  // The count starts here: enabling restarts QEMU's timer at this instruction's virtual time.
  cm::reg(base + kTimerCtrl) = kTimerCtrlEnable;
}

std::uint32_t timer_ticks(unsigned index) {
  return kTimerTop - cm::reg(timer_base(index) + kTimerValue);
}

void UartStream::open() {
  cm::reg(base_ + kUartBauddiv) = kUartDivider;
  cm::reg(base_ + kUartCtrl) = kCtrlTxEn | kCtrlRxEn;
}

bool UartStream::write(const std::uint8_t* data, std::size_t n, std::uint32_t timeout_ms) {
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t start = millis();
    while ((cm::reg(base_ + kUartState) & kStateTxFull) != 0) {
      if (millis() - start >= timeout_ms) {
        return false;
      }
    }
    cm::reg(base_ + kUartData) = data[i];
  }
  return true;
}

std::size_t UartStream::write_some(const std::uint8_t* data, std::size_t n) {
  std::size_t sent = 0;
  while (sent < n && (cm::reg(base_ + kUartState) & kStateTxFull) == 0) {
    cm::reg(base_ + kUartData) = data[sent++];
  }
  return sent;
}

std::size_t UartStream::read_some(std::uint8_t* data, std::size_t n) {
  std::size_t got = 0;
  while (got < n && (cm::reg(base_ + kUartState) & kStateRxFull) != 0) {
    data[got++] = static_cast<std::uint8_t>(cm::reg(base_ + kUartData));
  }
  return got;
}

bool UartStream::read(std::uint8_t* data, std::size_t n, std::uint32_t timeout_ms) {
  const std::uint32_t start = millis();
  std::size_t got = 0;
  while (got < n) {
    got += read_some(data + got, n - got);
    if (got < n && millis() - start >= timeout_ms) {
      return false;
    }
  }
  return true;
}

UartStream& uart(unsigned index) {
  if (index >= sizeof(g_uarts) / sizeof(g_uarts[0])) {
    fatal("qemu-mps2 has UARTs 0..4 only");
  }
  return g_uarts[index];
}

}  // namespace qemu
}  // namespace nmcm::port
