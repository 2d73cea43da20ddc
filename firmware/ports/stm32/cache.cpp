// Cortex-M7 L1 cache enable (the H7A3; the Cortex-M4 has none). Sequence from the ARMv7-M ARM,
// B2.2 (cache maintenance) and the Cortex-M7 TRM, chapter 4: invalidate the whole cache, then set
// CCR.IC / CCR.DC, with barriers so that no access uses a half-enabled cache.
#include <cstdint>

#include "nmcm/port/cortex_m.h"

namespace nmcm::port::cortex_m {

void enable_instruction_cache() {
  dsb();
  isb();
  reg(kIcialu) = 0;
  dsb();
  isb();
  reg(kCcr) |= kCcrIc;
  dsb();
  isb();
}

void enable_data_cache() {
  reg(kCsselr) = 0;  // level 1, data cache
  dsb();
  const std::uint32_t ccsidr = reg(kCcsidr);
  // CCSIDR: LineSize [2:0] = log2(words per line) - 2, Associativity [12:3] = ways - 1,
  // NumSets [27:13] = sets - 1 (ARMv7-M ARM, B4.8). DCISW wants the set at bit log2(line bytes)
  // and the way in the top bits (B2.2, maintenance by set/way).
  const std::uint32_t line_shift = (ccsidr & 0x7u) + 4;
  const std::uint32_t ways = ((ccsidr >> 3) & 0x3FFu) + 1;
  const std::uint32_t sets = ((ccsidr >> 13) & 0x7FFFu) + 1;
  const std::uint32_t way_shift =
      ways > 1 ? static_cast<std::uint32_t>(__builtin_clz(ways - 1)) : 0;
  for (std::uint32_t set = 0; set < sets; ++set) {
    for (std::uint32_t way = 0; way < ways; ++way) {
      reg(kDcisw) = (set << line_shift) | (way_shift != 0 ? way << way_shift : 0);
    }
  }
  dsb();
  reg(kCcr) |= kCcrDc;
  dsb();
  isb();
}

}  // namespace nmcm::port::cortex_m
