// Reset and exception entry shared by the ARM ports (Cortex-M4/M7): what runs before main() and
// what runs when something goes wrong. The vector table itself is per board (NMCM_VECTOR_TABLE),
// because only the board knows how many external interrupts its NVIC has.
#include <cstdint>

#include "nmcm/port/cortex_m.h"
#include "nmcm/port/line.h"
#include "nmcm/port/port.h"

namespace cm = nmcm::port::cortex_m;

extern "C" {
// Linker-script symbols (cortex_m.ld). Arrays, so that no code takes the address of a scalar that
// does not exist.
extern std::uint32_t __vectors_start__[];
extern std::uint32_t __stack_start__[];
extern std::uint32_t _sidata[], _sdata[], _edata[];
extern std::uint32_t _sbss[], _ebss[];
extern std::uint32_t _sarena[], _earena[];
using InitFunction = void (*)();
extern InitFunction __preinit_array_start[], __preinit_array_end[];
extern InitFunction __init_array_start[], __init_array_end[];

// main() under another C++ name: ISO C++ forbids calling ::main, the reset handler must.
int nmcm_application_main() __asm__("main");

void nmcm_fault_report(const std::uint32_t* frame);
}

namespace {

void copy_words(std::uint32_t* dst, const std::uint32_t* src, const std::uint32_t* dst_end) {
  while (dst < dst_end) {
    *dst++ = *src++;
  }
}

void zero_words(std::uint32_t* dst, const std::uint32_t* dst_end) {
  while (dst < dst_end) {
    *dst++ = 0;
  }
}

// Names of the system exceptions by number (ARMv7-M ARM, B1.5.2), for fault reports.
const char* exception_name(std::uint32_t number) {
  switch (number) {
    case 2:
      return "NMI";
    case 3:
      return "HardFault";
    case 4:
      return "MemManage";
    case 5:
      return "BusFault";
    case 6:
      return "UsageFault";
    case 11:
      return "SVCall";
    case 12:
      return "DebugMonitor";
    case 14:
      return "PendSV";
    default:
      return "exception";
  }
}

std::uint32_t active_exception() {
  std::uint32_t ipsr;
  __asm volatile("mrs %0, ipsr" : "=r"(ipsr));
  return ipsr & 0x1FFu;
}

}  // namespace

extern "C" [[noreturn]] void Reset_Handler() {
  // Before anything else: the copy loops below or a static constructor may already use the FPU.
  cm::enable_fpu();
  cm::reg(cm::kVtor) = reinterpret_cast<std::uintptr_t>(__vectors_start__);
  copy_words(_sdata, _sidata, _edata);
  zero_words(_sbss, _ebss);
  zero_words(_sarena, _earena);
  cm::enable_fault_reporting();
  for (InitFunction* f = __preinit_array_start; f < __preinit_array_end; ++f) {
    (*f)();
  }
  for (InitFunction* f = __init_array_start; f < __init_array_end; ++f) {
    (*f)();
  }
  cm::on_main_return(nmcm_application_main());
}

// HardFault, MemManage, BusFault, UsageFault: find the stacked frame (MSP or PSP, from EXC_RETURN
// bit 2) and report it. If the main stack ran off the bottom of its region (the stack sits first
// in RAM so that an overflow faults instead of overwriting .data), the frame is unreadable and the
// report itself would fault again: restart the main stack at its top and report without a frame.
#define NMCM_FAULT_TRAMPOLINE(name)               \
  extern "C" __attribute__((naked)) void name() { \
    __asm volatile(                               \
        "tst lr, #4\n"                            \
        "ite eq\n"                                \
        "mrseq r0, msp\n"                         \
        "mrsne r0, psp\n"                         \
        "ldr r1, =__stack_start__\n"              \
        "cmp r0, r1\n"                            \
        "bhs 1f\n"                                \
        "ldr r1, =__stack_end__\n"                \
        "msr msp, r1\n"                           \
        "movs r0, #0\n"                           \
        "1:\n"                                    \
        "b nmcm_fault_report\n");                 \
  }

NMCM_FAULT_TRAMPOLINE(HardFault_Handler)
NMCM_FAULT_TRAMPOLINE(MemManage_Handler)
NMCM_FAULT_TRAMPOLINE(BusFault_Handler)
NMCM_FAULT_TRAMPOLINE(UsageFault_Handler)

extern "C" void nmcm_fault_report(const std::uint32_t* frame) {
  // Fault status and address registers: CFSR, HFSR, MMFAR, BFAR (ARMv7-M ARM, B3.2).
  nmcm::port::Line<192> line;
  line.text(exception_name(active_exception()));
  if (frame != nullptr) {
    // The basic frame stacked on exception entry: r0 r1 r2 r3 r12 lr pc xpsr (B1.5).
    line.text(" pc=").hex(frame[6]).text(" lr=").hex(frame[5]).text(" xpsr=").hex(frame[7]);
  } else {
    line.text(" (stack overflow, frame lost)");
  }
  line.text(" cfsr=").hex(cm::reg(cm::kCfsr)).text(" hfsr=").hex(cm::reg(cm::kHfsr));
  line.text(" mmfar=").hex(cm::reg(cm::kMmfar)).text(" bfar=").hex(cm::reg(cm::kBfar));
  nmcm::port::fatal(line.c_str());
}

// Every other exception and interrupt: nmcm enables none of them, so reaching one is a bug.
extern "C" void Default_Handler() {
  const std::uint32_t number = active_exception();
  nmcm::port::Line<64> line;
  if (number >= 16) {
    line.text("unexpected interrupt ").dec(number - 16);
  } else {
    line.text("unexpected ").text(exception_name(number)).text(" exception");
  }
  nmcm::port::fatal(line.c_str());
}

// Weak, so that an application can take one over (PendSV for a scheduler, for example).
extern "C" void NMI_Handler() __attribute__((weak, alias("Default_Handler")));
extern "C" void SVC_Handler() __attribute__((weak, alias("Default_Handler")));
extern "C" void DebugMon_Handler() __attribute__((weak, alias("Default_Handler")));
extern "C" void PendSV_Handler() __attribute__((weak, alias("Default_Handler")));

// A pure virtual call can only come from a bug (a call through a half-destroyed object); without
// this definition libsupc++'s would pull in std::terminate and the exception machinery.
extern "C" void __cxa_pure_virtual() { nmcm::port::fatal("pure virtual call"); }
