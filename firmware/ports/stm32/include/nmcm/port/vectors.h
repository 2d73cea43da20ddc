// The Cortex-M vector table (ARMv7-M ARM, B1.5.3): the initial stack pointer, then the handler
// addresses of the 15 system exceptions, then one per external interrupt. The handlers live in the
// shared startup code; a board only states how many external interrupts its NVIC has:
//
//   NMCM_VECTOR_TABLE(102);   // STM32F413: positions 0..101 (RM0430, "Interrupts and events")
//
// Every external interrupt points at Default_Handler, which reports its number and stops: nmcm
// polls its peripherals and enables no interrupt but SysTick.
#pragma once

#include <cstddef>
#include <cstdint>

extern "C" {
// Linker-script symbols (ports/stm32/cortex_m.ld): the initial stack pointer is the top of .stack.
extern std::uint32_t __stack_end__[];

[[noreturn]] void Reset_Handler();
void NMI_Handler();
void HardFault_Handler();
void MemManage_Handler();
void BusFault_Handler();
void UsageFault_Handler();
void SVC_Handler();
void DebugMon_Handler();
void PendSV_Handler();
void SysTick_Handler();
void Default_Handler();
}

namespace nmcm::port::cortex_m {

using Handler = void (*)();

template <std::size_t kExternalIrqs>
struct VectorTable {
  const void* initial_sp;
  Handler system[15];  // exception numbers 1..15
  Handler irq[kExternalIrqs];
};

template <std::size_t kExternalIrqs>
constexpr VectorTable<kExternalIrqs> make_vector_table() {
  VectorTable<kExternalIrqs> table{};
  table.initial_sp = __stack_end__;
  table.system[0] = Reset_Handler;       // 1
  table.system[1] = NMI_Handler;         // 2
  table.system[2] = HardFault_Handler;   // 3
  table.system[3] = MemManage_Handler;   // 4
  table.system[4] = BusFault_Handler;    // 5
  table.system[5] = UsageFault_Handler;  // 6
  table.system[10] = SVC_Handler;        // 11 (7..10 are reserved)
  table.system[11] = DebugMon_Handler;   // 12 (13 is reserved)
  table.system[13] = PendSV_Handler;     // 14
  table.system[14] = SysTick_Handler;    // 15
  for (std::size_t i = 0; i < kExternalIrqs; ++i) {
    table.irq[i] = Default_Handler;
  }
  return table;
}

}  // namespace nmcm::port::cortex_m

// Defines the table in .isr_vector, which the linker script places first in the boot region.
// The symbol name is what the port libraries force into the link (-Wl,--undefined=nmcm_vectors).
#define NMCM_VECTOR_TABLE(external_irqs)                   \
  extern "C" __attribute__((section(".isr_vector"), used)) \
  const nmcm::port::cortex_m::VectorTable<(external_irqs)> \
      nmcm_vectors = nmcm::port::cortex_m::make_vector_table<(external_irqs)>()
