// Where the model's arena goes on the ARM ports: the linker scripts collect `.arena` input sections
// into one output section placed in the MCU's arena region (AXI SRAM on the H7A3, SRAM after .bss
// on the F413, RAM under QEMU). Reset_Handler zeroes it like .bss, so a static array keeps the
// C++ guarantee of zero-initialised storage while the image carries no bytes for it.
//
//   alignas(16) static std::uint8_t arena[kArenaSize] NMCM_ARENA_SECTION;
#pragma once

#define NMCM_ARENA_SECTION __attribute__((section(".arena"), aligned(16)))
