// The per-node build id (see qemu_node.h), from the build's NMCM_FIRMWARE_HASH. Compiled once per
// node, like node_config.cpp.
#include "qemu_node.h"

#ifndef NMCM_FIRMWARE_HASH
#define NMCM_FIRMWARE_HASH "00000000000000000000000000000000"
#endif

static_assert(sizeof(NMCM_FIRMWARE_HASH) == 33, "NMCM_FIRMWARE_HASH must be 32 hex digits");

const char* nmcm::app::firmware_hash_hex() { return NMCM_FIRMWARE_HASH; }
