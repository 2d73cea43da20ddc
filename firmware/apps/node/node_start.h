// Node start-up shared by the three node mains (main_host.cpp, ../node-qemu/main_qemu.cpp,
// ../node-board/main_board.cpp): what every node takes from its build (node_app.h). Each main
// keeps only what its target does differently: where the blob comes from, how a refusal is
// reported, and its network.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/runtime/node.h"
#include "nmcm/stage.h"
#include "nmcm/status.h"
#include "node_app.h"

namespace nmcm::app {

// Loads the stage from `blob` into the build's arena, checked against what the build pins: the
// model hash and the stage's index and count (a blob of another node or model is refused).
nmcm::Status load_stage(nmcm::Stage& stage, const NodeBuild& build, const std::uint8_t* blob,
                        std::size_t size);

// The node configuration every node takes from its build: cluster, model hash, stage, listening
// address (the node's W5500 address and the build's port), downstream neighbour, arena and log.
// The caller adds what only it knows (firmware hash, instance) and may change the listen address.
void configure_node(const NodeBuild& build, void (*log)(const char*),
                    nmcm::runtime::NodeConfig* config);

}  // namespace nmcm::app
