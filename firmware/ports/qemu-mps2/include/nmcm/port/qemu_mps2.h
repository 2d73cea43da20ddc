// What the qemu-mps2 port offers beyond the port contract (port.h): the instruction counter, the
// exit code, the host's files (for the host link, host_link.h) and the CMSDK UARTs. Code that
// includes this header is QEMU-only; the port library defines NMCM_PORT_QEMU_MPS2 for its users so
// that shared code can test for it.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nmcm::port::qemu {

// The SysTick clock of QEMU's MPS2 boards (hw/arm/mps2.c, SYSCLK_FRQ), whichever image.
constexpr std::uint32_t kSysclkHz = 25000000;
// One SysTick tick is this many nanoseconds of QEMU's virtual clock, and under
// `-icount shift=0,sleep=off` one instruction advances the virtual clock by exactly 1 ns.
constexpr std::uint32_t kNanosecondsPerTick = 1000000000u / kSysclkHz;

// Instructions executed since init(), counted through SysTick. Exact up to one tick (40
// instructions) when QEMU runs with `-icount shift=0,sleep=off`; without -icount it measures
// virtual time, not work. Read it before and after a region and subtract.
std::uint64_t instructions();

// True if `word` is one of the space-separated words of the semihosting command line
// (SYS_GET_CMDLINE: QEMU's `-semihosting-config ...,arg=image.elf,arg=word`). Lines longer than
// 256 bytes are read only that far.
bool has_argument(const char* word);

// The number N of a word `name=N` of the semihosting command line (decimal, below 2^32), if
// there is one.
bool number_argument(const char* name, std::uint32_t* value);

// The text T of a word `name=T` of the semihosting command line, copied into `out` (at most
// capacity - 1 characters and a NUL); false if there is no such word or it does not fit.
bool text_argument(const char* name, char* out, std::size_t capacity);

// Ends QEMU with this exit status through semihosting (SYS_EXIT for 0, SYS_EXIT_EXTENDED else).
[[noreturn]] void exit(int code);

// Nanoseconds of the host's clock since QEMU started (semihosting SYS_ELAPSED and SYS_TICKFREQ).
// Wall-clock time, not virtual time: it runs on however fast QEMU emulates, so timeouts measured
// with it mean what they say for the peers on the host. Falls back to virtual time (SysTick) if
// the semihosting implementation lacks SYS_ELAPSED.
std::uint64_t host_nanoseconds();

// A file of the host's, opened through semihosting (SYS_OPEN, SYS_READ, SYS_WRITE, SYS_CLOSE with
// QEMU's `target=native`: the host's own open/read/write on the path, relative to QEMU's working
// directory). The calls run on QEMU's CPU thread: a read of a named pipe with nothing in it holds
// the emulated core until something comes, which is what a node waiting for its host link wants.
class HostFile {
 public:
  enum class Mode : std::uint32_t { kRead = 0, kWrite = 4 };  // "r" and "w" (SYS_OPEN's modes)

  // False if the host refused (no such file, no permission).
  bool open(const char* path, Mode mode);
  bool is_open() const { return handle_ >= 0; }
  // Up to n bytes; 0 at the end of the file (a pipe whose writers all closed) or on an error.
  // Waits until at least one byte is there.
  std::size_t read(std::uint8_t* data, std::size_t n);
  // All n bytes, or false.
  bool write(const std::uint8_t* data, std::size_t n);
  void close();

 private:
  std::int32_t handle_ = -1;
};

// The CMSDK APB timers 0 and 1 (ARM DDI 0479C, "APB timer"; QEMU hw/timer/cmsdk-apb-timer.c) as
// counters of kSysclkHz ticks, without interrupts: 40 instructions per tick under
// `-icount shift=0`. restart_timer(i) starts timer i from zero at that very instruction, so the
// ticks read after a given run of instructions are the same on every run. A counter that runs
// across it (SysTick) gives readings that depend on where within a tick the run began.
void restart_timer(unsigned index);
// Ticks since restart_timer(index), modulo 2^32 (one wrap per 171.8 s of virtual time).
std::uint32_t timer_ticks(unsigned index);

// One of the five CMSDK APB UARTs (DDI 0479C, "APB UART"): UART n is QEMU's serial port n, so
// `-serial chardev:c0 -serial chardev:c1` puts chardevs c0 and c1 on UARTs 0 and 1. Without a
// backend, output goes nowhere and nothing arrives.
class UartStream {
 public:
  explicit constexpr UartStream(std::uintptr_t base) : base_(base) {}

  // Enables the transmitter and receiver. Idempotent.
  void open();

  // Sends all n bytes; false if the transmitter stayed full for timeout_ms (QEMU's backend not
  // draining, as with a socket nobody reads).
  bool write(const std::uint8_t* data, std::size_t n, std::uint32_t timeout_ms);

  // Sends as many of the n bytes as the transmitter takes right now; never waits. Returns how
  // many. (Under QEMU a byte is handed to the chardev as it is written, so this is all of them
  // unless the chardev's peer stopped reading.)
  std::size_t write_some(const std::uint8_t* data, std::size_t n);

  // Copies up to n bytes that have already arrived; never waits. Returns how many.
  std::size_t read_some(std::uint8_t* data, std::size_t n);

  // Waits for exactly n bytes; false if they have not all arrived within timeout_ms.
  bool read(std::uint8_t* data, std::size_t n, std::uint32_t timeout_ms);

 private:
  std::uintptr_t base_;
};

// UART 0..4; fatal() for any other index.
UartStream& uart(unsigned index);

}  // namespace nmcm::port::qemu
