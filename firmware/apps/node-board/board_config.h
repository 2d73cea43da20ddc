// What a board node's build pins besides NodeBuild (../node/node_app.h): the id of its firmware.
// board_config.cpp defines it from the build's NMCM_FIRMWARE_HASH, and refuses at compile time a
// node whose manifest gives it no address on the cluster's Ethernet.
#pragma once

#include <cstdint>

namespace nmcm::app {

// 16 bytes: the build key nmcm built this image under (nmcm_deploy/build/arm.py), reported in
// HELLO_ACK and STATUS so that `nmcm status` can tell which firmware a board runs.
const std::uint8_t* firmware_hash();

}  // namespace nmcm::app
