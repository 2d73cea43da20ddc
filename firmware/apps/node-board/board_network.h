// Where a board node's NodeNetwork comes from: the W5500 on the board's SPI bus
// (port::w5500_bus(), pins from the board profile or the manifest's overrides), brought up with
// the node's addresses. main_board.cpp knows nothing else about the network, so another network
// (a second W5500, a UART stream) is another definition of this one function.
#pragma once

#include <cstdint>

#include "nmcm/runtime/node.h"
#include "node_app.h"

namespace nmcm::app {

// Resets the chip, checks that it is there, configures MAC, IP, subnet and gateway from `build`
// (the manifest's w5500 and network) and the socket buffers for the node's role (every stage but
// the last has a downstream neighbour), and waits up to link_timeout_ms for the Ethernet link (a
// missing link is logged, not fatal: the cable may come later). Returns the network, or nullptr
// with *why saying what failed (no W5500, a bus fault). Called once; the network is static.
runtime::NodeNetwork* make_board_network(const NodeBuild& build, std::uint32_t link_timeout_ms,
                                         const char** why);

}  // namespace nmcm::app
