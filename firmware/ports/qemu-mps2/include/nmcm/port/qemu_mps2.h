// What the qemu-mps2 port offers beyond the port contract (port.h): the instruction counter, the
// exit code, and the CMSDK UARTs as byte streams between nodes. Code that includes this header is
// QEMU-only; the port library defines NMCM_PORT_QEMU_MPS2 for its users so that shared code can
// test for it.
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

// Ends QEMU with this exit status through semihosting (SYS_EXIT for 0, SYS_EXIT_EXTENDED else).
[[noreturn]] void exit(int code);

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
