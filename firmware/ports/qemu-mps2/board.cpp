// qemu-mps2 port: the real ARM images under `qemu-system-arm -M mps2-an386` (Cortex-M4) or
// `-M mps2-an500` (Cortex-M7). The log and the exit status go through ARM semihosting (QEMU:
// `-semihosting-config enable=on,target=native`); node-to-node streams through the CMSDK UARTs; the
// W5500 does not exist here, so its bus fails every transfer and nodes use the UART streams.
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
constexpr std::uint32_t kSysWrite0 = 0x04;
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
constexpr std::uint32_t kCtrlRxIntEn = 1u << 3;
constexpr std::uintptr_t kUartIntClear = 0x0C;  // INTSTATUS on read, INTCLEAR on write
constexpr std::uint32_t kIntRx = 1u << 1;
// The UARTs' receive interrupts on the NVIC (hw/arm/mps2.c: RX of UART n, TX one above).
constexpr unsigned kUartRxIrqs[] = {0, 2, 4, 18, 20};
// NVIC (ARMv7-M ARM B3.4): set-enable, clear-enable, clear-pending, one bit per interrupt.
constexpr std::uintptr_t kNvicIser = 0xE000E100;
constexpr std::uintptr_t kNvicIcer = 0xE000E180;
constexpr std::uintptr_t kNvicIcpr = 0xE000E280;
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

void wait_for_uarts(unsigned mask) {
  constexpr unsigned kCount = sizeof(kUartBases) / sizeof(kUartBases[0]);
  // With PRIMASK set, WFI still wakes for an interrupt that is enabled and pending (ARMv7-M ARM,
  // "Wait For Interrupt"), but its handler does not run: the UART interrupts are enabled only in
  // here and cleared before interrupts come back on, so Default_Handler never sees them.
  const std::uint32_t primask = cm::disable_interrupts();
  bool ready = false;
  for (unsigned i = 0; i < kCount; ++i) {
    if ((mask & (1u << i)) == 0) continue;
    const std::uintptr_t base = kUartBases[i];
    const unsigned irq = kUartRxIrqs[i];
    cm::reg(base + kUartCtrl) |= kCtrlRxIntEn;
    cm::reg(base + kUartIntClear) = kIntRx;
    cm::reg(kNvicIcpr + 4 * (irq / 32)) = 1u << (irq % 32);
    cm::reg(kNvicIser + 4 * (irq / 32)) = 1u << (irq % 32);
    // A byte that came before the interrupt was enabled raises none: look.
    ready = ready || (cm::reg(base + kUartState) & kStateRxFull) != 0;
  }
  if (!ready) {
    cm::dsb();
    __asm volatile("wfi" ::: "memory");
  }
  for (unsigned i = 0; i < kCount; ++i) {
    if ((mask & (1u << i)) == 0) continue;
    const std::uintptr_t base = kUartBases[i];
    const unsigned irq = kUartRxIrqs[i];
    cm::reg(kNvicIcer + 4 * (irq / 32)) = 1u << (irq % 32);
    cm::reg(base + kUartCtrl) &= ~kCtrlRxIntEn;
    cm::reg(base + kUartIntClear) = kIntRx;                  // the line drops ...
    cm::reg(kNvicIcpr + 4 * (irq / 32)) = 1u << (irq % 32);  // ... then its pending bit
  }
  cm::restore_interrupts(primask);
}

UartStream& uart(unsigned index) {
  if (index >= sizeof(g_uarts) / sizeof(g_uarts[0])) {
    fatal("qemu-mps2 has UARTs 0..4 only");
  }
  return g_uarts[index];
}

}  // namespace qemu
}  // namespace nmcm::port
