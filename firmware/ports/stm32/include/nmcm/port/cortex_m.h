// Cortex-M4/M7 core registers and helpers shared by every ARM port (the two Nucleo boards and
// QEMU's MPS2 boards). Addresses are the architecture's System Control Space, the same on every
// ARMv7-M part: ARMv7-M Architecture Reference Manual (ARM DDI 0403E), B3.2 (SCB, CPACR), B3.3
// (SysTick), C1.6 (DEMCR), C1.8 (DWT); the cache maintenance operations are B2.2 there, as the
// Cortex-M7 implements them (Cortex-M7 TRM, ARM DDI 0489, chapter 4).
#pragma once

#include <cstddef>
#include <cstdint>

namespace nmcm::port::cortex_m {

inline volatile std::uint32_t& reg(std::uintptr_t address) {
  return *reinterpret_cast<volatile std::uint32_t*>(address);
}

// System Control Block (B3.2).
constexpr std::uintptr_t kIcsr = 0xE000ED04;   // Interrupt Control and State
constexpr std::uintptr_t kVtor = 0xE000ED08;   // Vector Table Offset
constexpr std::uintptr_t kCcr = 0xE000ED14;    // Configuration and Control
constexpr std::uintptr_t kShcsr = 0xE000ED24;  // System Handler Control and State
constexpr std::uintptr_t kCfsr = 0xE000ED28;   // Configurable Fault Status (MMFSR|BFSR|UFSR)
constexpr std::uintptr_t kHfsr = 0xE000ED2C;   // HardFault Status
constexpr std::uintptr_t kMmfar = 0xE000ED34;  // MemManage Fault Address
constexpr std::uintptr_t kBfar = 0xE000ED38;   // BusFault Address
constexpr std::uintptr_t kCpacr = 0xE000ED88;  // Coprocessor Access Control
constexpr std::uint32_t kIcsrPendstset = 1u << 26;
constexpr std::uint32_t kCcrDiv0Trp = 1u << 4;
constexpr std::uint32_t kCcrDc = 1u << 16;  // Cortex-M7: data cache enable
constexpr std::uint32_t kCcrIc = 1u << 17;  // Cortex-M7: instruction cache enable
constexpr std::uint32_t kShcsrMemFaultEna = 1u << 16;
constexpr std::uint32_t kShcsrBusFaultEna = 1u << 17;
constexpr std::uint32_t kShcsrUsgFaultEna = 1u << 18;

// SysTick (B3.3).
constexpr std::uintptr_t kSystCsr = 0xE000E010;
constexpr std::uintptr_t kSystRvr = 0xE000E014;
constexpr std::uintptr_t kSystCvr = 0xE000E018;
constexpr std::uint32_t kSystCsrEnable = 1u << 0;
constexpr std::uint32_t kSystCsrTickint = 1u << 1;
constexpr std::uint32_t kSystCsrClksource = 1u << 2;  // 1 = the processor clock
constexpr std::uint32_t kSystMaxReload = 0x00FFFFFF;  // the counter is 24 bits wide

// Debug: DEMCR (C1.6) gates the DWT; the DWT (C1.8) holds the cycle counter.
constexpr std::uintptr_t kDemcr = 0xE000EDFC;
constexpr std::uint32_t kDemcrTrcena = 1u << 24;
constexpr std::uintptr_t kDwtCtrl = 0xE0001000;
constexpr std::uintptr_t kDwtCyccnt = 0xE0001004;
// CoreSight software lock: the Cortex-M7's DWT ignores writes until the key is written to its Lock
// Access Register; on the Cortex-M4 the write is harmless.
constexpr std::uintptr_t kDwtLar = 0xE0001FB0;
constexpr std::uint32_t kCoreSightUnlock = 0xC5ACCE55;
constexpr std::uint32_t kDwtCtrlCyccntena = 1u << 0;
constexpr std::uint32_t kDwtCtrlNocyccnt = 1u << 25;

// Cortex-M7 cache identification and maintenance (B2.2, B4.8).
constexpr std::uintptr_t kCcsidr = 0xE000ED80;  // Cache Size ID of the level CSSELR selects
constexpr std::uintptr_t kCsselr = 0xE000ED84;  // Cache Size Selection
constexpr std::uintptr_t kIcialu = 0xE000EF50;  // invalidate all instruction cache to PoU
constexpr std::uintptr_t kDcisw = 0xE000EF60;   // invalidate data cache line by set/way

inline void dsb() { __asm volatile("dsb sy" ::: "memory"); }
inline void isb() { __asm volatile("isb sy" ::: "memory"); }

// Masks interrupts and returns the previous PRIMASK, for restore_interrupts().
inline std::uint32_t disable_interrupts() {
  std::uint32_t primask;
  __asm volatile("mrs %0, primask\n cpsid i" : "=r"(primask)::"memory");
  return primask;
}
inline void restore_interrupts(std::uint32_t primask) {
  __asm volatile("msr primask, %0" ::"r"(primask) : "memory");
}

// Full access to CP10/CP11 (the FPU). Must run before the first floating-point instruction:
// without it that instruction raises a UsageFault (NOCP).
inline void enable_fpu() {
  reg(kCpacr) |= 0xFu << 20;
  dsb();
  isb();
}

// Report MemManage, BusFault and UsageFault through their own handlers instead of escalating them
// all to HardFault, and trap integer division by zero (otherwise it quietly yields 0).
inline void enable_fault_reporting() {
  reg(kShcsr) |= kShcsrMemFaultEna | kShcsrBusFaultEna | kShcsrUsgFaultEna;
  reg(kCcr) |= kCcrDiv0Trp;
  dsb();
  isb();
}

// Starts DWT CYCCNT from zero. Returns false if this core has no cycle counter (NOCYCCNT).
inline bool enable_cycle_counter() {
  reg(kDemcr) |= kDemcrTrcena;
  reg(kDwtLar) = kCoreSightUnlock;
  if ((reg(kDwtCtrl) & kDwtCtrlNocyccnt) != 0) {
    return false;
  }
  reg(kDwtCyccnt) = 0;
  reg(kDwtCtrl) |= kDwtCtrlCyccntena;
  return true;
}

// Cortex-M7 L1 caches, as the ARMv7-M ARM B2.2 prescribes: invalidate, then enable.
void enable_instruction_cache();
void enable_data_cache();

// The 1 kHz SysTick behind millis(). `core_hz` is the processor clock SysTick counts.
void start_systick(std::uint32_t core_hz);
// Processor-clock ticks counted by SysTick since start_systick(): milliseconds times the period
// plus the position inside the current period, read consistently even when the counter wraps
// between the two reads (a pending SysTick interrupt is accounted for).
std::uint64_t systick_ticks();

// What the port does when main() returns (QEMU: exit with its value; boards: log and halt).
[[noreturn]] void on_main_return(int code);

}  // namespace nmcm::port::cortex_m
