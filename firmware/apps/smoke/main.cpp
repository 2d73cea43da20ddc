// Smoke firmware for every ARM port: bring the board up, say so, run a fixed arithmetic self-test
// timed by the port's counters, and finish (QEMU: exit status 0; boards: "main returned 0" and
// halt). A wrong result is fatal: non-zero exit under QEMU, the red LED on a board.
//
// Under QEMU, the semihosting command line can ask for more (-semihosting-config ...,arg=...):
//   uart-echo   send "nmcm-ping" on UART1 and expect 9 bytes back "nmcm-ping" within 2 s: a peer
//               echoing, or a second node doing the same, proves the node-to-node byte stream.
//   uart-stream bytes=N
//               send back on UART1 every byte that comes on it until N have (bench/qemu_link.py
//               compares the host link with it).
//   link-echo bytes=N link=DIR
//               send back on stream 0 of the host link (nmcm/port/host_link.h) every byte that
//               comes on it until N have: the relay's test and bench/qemu_link.py measure the
//               link through it.
//   fault       divide by zero after the self-test: the trap enabled at reset must raise a
//               UsageFault (DIVBYZERO), and the fault handler must report it and end QEMU with
//               status 1 (the path every crash takes).
#include <cstddef>
#include <cstdint>

#include "nmcm/port/arena.h"
#include "nmcm/port/line.h"
#include "nmcm/port/port.h"
#ifdef NMCM_PORT_QEMU_MPS2
#include "nmcm/port/host_link.h"
#include "nmcm/port/qemu_mps2.h"
#endif

namespace {

constexpr std::size_t kN = 1024;

// One operand in the arena section, so that the test also touches the region the linker script
// gives the arena (AXI SRAM on the H7A3), the other in .bss.
alignas(16) float g_a[kN] NMCM_ARENA_SECTION;
float g_b[kN];
// Read at run time, so that the compiler cannot fold the whole test into a constant.
volatile std::uint32_t g_seed = 7;

// Small integers: every partial sum stays below 2^24, so the float result is exact and must equal
// the integer reference. A mismatch means broken FPU setup, memory or code generation.
std::int32_t a_value(std::uint32_t i, std::uint32_t seed) {
  return static_cast<std::int32_t>((i * seed) % 17) - 8;
}
std::int32_t b_value(std::uint32_t i, std::uint32_t seed) {
  return static_cast<std::int32_t>((i + seed) % 13);
}

// noipa: neither inlined nor known to be pure, so that each call in a timed loop really runs.
__attribute__((noipa)) float dot(const float* a, const float* b, std::size_t n) {
  float sum = 0.0f;
  for (std::size_t i = 0; i < n; ++i) {
    sum += a[i] * b[i];
  }
  return sum;
}

#ifdef NMCM_PORT_QEMU_MPS2
bool uart_echo() {
  static const std::uint8_t kPing[] = {'n', 'm', 'c', 'm', '-', 'p', 'i', 'n', 'g'};
  nmcm::port::qemu::UartStream& link = nmcm::port::qemu::uart(1);
  link.open();
  std::uint8_t reply[sizeof(kPing)] = {};
  if (!link.write(kPing, sizeof(kPing), 2000) || !link.read(reply, sizeof(reply), 2000)) {
    return false;
  }
  for (std::size_t i = 0; i < sizeof(kPing); ++i) {
    if (reply[i] != kPing[i]) {
      return false;
    }
  }
  return true;
}
#endif

}  // namespace

#ifdef NMCM_PORT_QEMU_MPS2
namespace {

nmcm::port::qemu::HostLink g_link;

std::uint32_t bytes_argument() {
  std::uint32_t total = 0;
  if (!nmcm::port::qemu::number_argument("bytes", &total)) {
    nmcm::port::fatal("an echo needs bytes=N");
  }
  return total;
}

void uart_stream() {
  nmcm::port::qemu::UartStream& uart = nmcm::port::qemu::uart(1);
  uart.open();
  const std::uint32_t total = bytes_argument();
  std::uint32_t echoed = 0;
  while (echoed < total) {
    std::uint8_t byte = 0;
    if (uart.read_some(&byte, 1) == 1) {
      while (uart.write_some(&byte, 1) == 0) {
      }
      ++echoed;
    }
  }
  nmcm::port::Line<64> done;
  nmcm::port::log(done.text("uart echo ok ").dec(echoed).c_str());
}

void link_echo() {
  static char dir[160];
  if (!nmcm::port::qemu::text_argument("link", dir, sizeof dir)) {
    nmcm::port::fatal("link-echo needs link=DIR");
  }
  const std::uint32_t total = bytes_argument();
  g_link.open(dir);
  static std::uint8_t chunk[2048];
  std::uint32_t echoed = 0;
  while (echoed < total) {
    const std::size_t got = g_link.read_some(0, chunk, sizeof chunk);
    if (got == 0) {
      g_link.wait(20);
      continue;
    }
    for (std::size_t sent = 0; sent < got;) {
      sent += g_link.write_some(0, chunk + sent, got - sent);
    }
    echoed += static_cast<std::uint32_t>(got);
  }
  nmcm::port::Line<64> done;
  nmcm::port::log(done.text("link echo ok ").dec(echoed).c_str());
}

}  // namespace
#endif

int main() {
  nmcm::port::init();
  nmcm::port::log("nmcm " NMCM_PORT_NAME " up");

  const std::uint32_t seed = g_seed;
  std::int64_t expected = 0;
  for (std::uint32_t i = 0; i < kN; ++i) {
    g_a[i] = static_cast<float>(a_value(i, seed));
    g_b[i] = static_cast<float>(b_value(i, seed));
    expected += static_cast<std::int64_t>(a_value(i, seed)) * b_value(i, seed);
  }

  const std::uint32_t cycles_before = nmcm::port::cycles();
#ifdef NMCM_PORT_QEMU_MPS2
  const std::uint64_t instructions_before = nmcm::port::qemu::instructions();
#endif
  const float result = dot(g_a, g_b, kN);
  const std::uint32_t cycles = nmcm::port::cycles() - cycles_before;
#ifdef NMCM_PORT_QEMU_MPS2
  const std::uint64_t instructions = nmcm::port::qemu::instructions() - instructions_before;
#endif

  const auto got = static_cast<std::int64_t>(result);
  nmcm::port::Line<160> line;
  line.text("selftest dot").dec(kN).text(" = ").sdec(got).text(" (expected ").sdec(expected);
  line.text(") cycles ").dec(cycles);
#ifdef NMCM_PORT_QEMU_MPS2
  line.text(" instructions ").dec(instructions);
#endif
  nmcm::port::log(line.c_str());
  if (got != expected || static_cast<float>(got) != result) {
    nmcm::port::fatal("selftest: dot product mismatch");
  }

  // The same kernel kRepeats times: long enough (about 2 M instructions) for the counters to wrap
  // their periods several times, so that a wrong wrap count shows as a figure far from kRepeats
  // times the single one.
  constexpr std::uint32_t kRepeats = 400;
  const std::uint32_t long_cycles_before = nmcm::port::cycles();
#ifdef NMCM_PORT_QEMU_MPS2
  const std::uint64_t long_instructions_before = nmcm::port::qemu::instructions();
#endif
  float total = 0.0f;
  for (std::uint32_t r = 0; r < kRepeats; ++r) {
    total += dot(g_a, g_b, kN);
  }
  const std::uint32_t long_cycles = nmcm::port::cycles() - long_cycles_before;
  nmcm::port::Line<160> repeated;
  repeated.text("selftest dot").dec(kN).text(" x").dec(kRepeats).text(" cycles ").dec(long_cycles);
#ifdef NMCM_PORT_QEMU_MPS2
  repeated.text(" instructions ").dec(nmcm::port::qemu::instructions() - long_instructions_before);
#endif
  nmcm::port::log(repeated.c_str());
  if (static_cast<std::int64_t>(total) != expected * kRepeats) {
    nmcm::port::fatal("selftest: repeated dot product mismatch");
  }

#ifdef NMCM_PORT_QEMU_MPS2
  if (nmcm::port::qemu::has_argument("uart-echo")) {
    if (!uart_echo()) {
      nmcm::port::fatal("uart1: no echo within 2 s");
    }
    nmcm::port::log("uart1 echo ok");
  }

  if (nmcm::port::qemu::has_argument("uart-stream")) {
    uart_stream();
  }
  if (nmcm::port::qemu::has_argument("link-echo")) {
    link_echo();
  }

  if (nmcm::port::qemu::has_argument("fault")) {
    nmcm::port::log("fault test: dividing by zero");
    // Both operands volatile, or the compiler rewrites 1 / x as (x == 1) and never divides.
    static volatile std::uint32_t numerator = 1;
    static volatile std::uint32_t zero = 0;
    const std::uint32_t quotient = numerator / zero;
    nmcm::port::Line<48> after;
    nmcm::port::log(after.text("no trap: 1 / 0 = ").dec(quotient).c_str());
  }
#endif

  nmcm::port::log("smoke ok");
  return 0;
}
