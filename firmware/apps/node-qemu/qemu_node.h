// What the QEMU node's per-node units give main_qemu.cpp besides NodeBuild (../node/node_app.h).
#pragma once

namespace nmcm::app {

// The build key nmcm built this image under (NMCM_FIRMWARE_HASH): 32 hex digits, or all zeros
// for a build by hand. The node reports it in HELLO_ACK and STATUS (`nmcm status` compares it).
const char* firmware_hash_hex();

}  // namespace nmcm::app
