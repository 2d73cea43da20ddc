// What one node is built for: node_config.cpp defines it from the generated nmcm_stage.h (the
// only file that differs between nodes), main_host.cpp runs it. Kept to plain data so that
// node_config.cpp compiles with nothing but this header and the generated one.
#pragma once

#include <cstdint>

namespace nmcm::app {

struct NodeBuild {
  const char* cluster;
  const char* node;
  const char* mcu;
  const std::uint8_t* model_hash;  // 16 bytes
  std::uint16_t stage_index;
  std::uint16_t stage_count;
  std::uint16_t micro_batch;
  std::uint16_t slots;
  std::uint8_t* arena;  // static, 16-byte aligned, arena_size bytes
  std::uint32_t arena_size;
  std::uint32_t arena_capacity;  // what the MCU's SRAM gives the arena
  std::uint32_t clock_hz;
  std::uint16_t listen_port;
  bool has_downstream;
  const std::uint8_t* downstream_ip;  // 4 bytes
  std::uint16_t downstream_port;
  // The node's W5500 addresses (manifest w5500.ip and .mac, network.gateway and .subnet; zeros
  // where the manifest gives none): what a sim node run through the emulated W5500 programs into
  // its chip.
  const std::uint8_t* ip;           // 4 bytes
  const std::uint8_t* mac;          // 6 bytes
  const std::uint8_t* gateway;      // 4 bytes
  const std::uint8_t* subnet_mask;  // 4 bytes
};

const NodeBuild& node_build();

}  // namespace nmcm::app
