// The per-node part of a board node build that ../node/node_config.cpp does not cover: the build
// key nmcm built the image under (NMCM_FIRMWARE_HASH, 32 hex digits), and the checks that the
// node's Ethernet addresses in the generated nmcm_stage.h are usable on a board. Compiled once per
// node.
#include <cstddef>
#include <cstdint>

#include "board_config.h"
#include "nmcm_stage.h"

#ifndef NMCM_FIRMWARE_HASH
#define NMCM_FIRMWARE_HASH "00000000000000000000000000000000"
#endif

namespace g = nmcm::generated;

namespace {

constexpr bool all_zero(const std::uint8_t* bytes, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (bytes[i] != 0) return false;
  }
  return true;
}

// On a board the manifest's addresses are used as they are: a node without them cannot be on the
// network (outside `hardware` they may be zeros: those nodes listen on loopback).
static_assert(!all_zero(g::kIp, 4), "this node has no w5500.ip in the manifest");
static_assert(!all_zero(g::kMac, 6), "this node has no w5500.mac in the manifest");
static_assert((g::kMac[0] & 0x01) == 0, "w5500.mac must be a unicast address");

constexpr char kHashHex[] = NMCM_FIRMWARE_HASH;
static_assert(sizeof kHashHex == 33, "NMCM_FIRMWARE_HASH must be 32 hex digits");

constexpr int hex_digit(char c) {
  return c >= '0' && c <= '9'   ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

constexpr bool all_hex(const char* text, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) {
    if (hex_digit(text[i]) < 0) return false;
  }
  return true;
}
static_assert(all_hex(kHashHex, 32), "NMCM_FIRMWARE_HASH must be 32 hex digits");

struct Hash {
  std::uint8_t bytes[16];
};

constexpr Hash parse_hash(const char* text) {
  Hash hash{};
  for (std::size_t i = 0; i < 16; ++i) {
    hash.bytes[i] =
        static_cast<std::uint8_t>(hex_digit(text[2 * i]) * 16 + hex_digit(text[2 * i + 1]));
  }
  return hash;
}

constexpr Hash kFirmwareHash = parse_hash(kHashHex);

}  // namespace

const std::uint8_t* nmcm::app::firmware_hash() { return kFirmwareHash.bytes; }
