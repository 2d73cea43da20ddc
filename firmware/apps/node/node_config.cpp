// The per-node part of a node build: everything the generated nmcm_stage.h pins (stage, model,
// arena, network). Compiled once per node and linked with the node libraries (README.md).
#include <cstdint>

#include "nmcm_stage.h"
#include "node_app.h"

// On the ARM ports the arena goes to the linker scripts' `.arena` section, in the MCU's arena
// region (AXI SRAM on the H7A3, zeroed at reset like .bss). Every ARM port has this header on its
// include path (ports/stm32/include); the host build does not, and keeps the arena in .bss.
#if __has_include("nmcm/port/arena.h")
#include "nmcm/port/arena.h"
#define NMCM_NODE_ARENA NMCM_ARENA_SECTION
#else
#define NMCM_NODE_ARENA
#endif

namespace g = nmcm::generated;

// The node holds its MCU's profile: a stage whose planned arena exceeds what the MCU's SRAM gives
// it is refused here, at build time, in `sim` exactly as on the chip.
static_assert(g::kArenaSize <= g::kArenaCapacity,
              "this stage's arena (kArenaSize) does not fit the MCU (kArenaCapacity in "
              "nmcm_stage.h): choose another split or a bigger MCU");
static_assert(g::kStageIndex < g::kStageCount, "stage index out of range");
static_assert(g::kHasDownstream == (g::kStageIndex + 1 < g::kStageCount),
              "every stage but the last has a downstream neighbour");

namespace {

// The arena: static, so that the image's .bss (.arena on ARM) is the SRAM figure (DESIGN.md,
// "The firmware").
alignas(16) std::uint8_t arena[g::kArenaSize > 0 ? g::kArenaSize : 1] NMCM_NODE_ARENA;

const nmcm::app::NodeBuild kBuild = {
    g::kClusterName, g::kNodeName,      g::kMcu,           g::kModelHash,
    g::kStageIndex,  g::kStageCount,    g::kMicroBatch,    g::kSlots,
    arena,           g::kArenaSize,     g::kArenaCapacity, g::kMcuClockHz,
    g::kListenPort,  g::kHasDownstream, g::kDownstreamIp,  g::kDownstreamPort,
    g::kIp,          g::kMac,           g::kGateway,       g::kSubnetMask,
};

}  // namespace

const nmcm::app::NodeBuild& nmcm::app::node_build() { return kBuild; }
