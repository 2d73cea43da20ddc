// Node start-up shared by the three node mains (node_start.h).
#include "node_start.h"

#include <cstring>

namespace nmcm::app {

nmcm::Status load_stage(nmcm::Stage& stage, const NodeBuild& build, const std::uint8_t* blob,
                        std::size_t size) {
  nmcm::StageExpect expect{};
  std::memcpy(expect.model_hash, build.model_hash, sizeof expect.model_hash);
  expect.stage_index = build.stage_index;
  expect.stage_count = build.stage_count;
  return stage.load(blob, size, build.arena, build.arena_size, &expect);
}

void configure_node(const NodeBuild& build, void (*log)(const char*),
                    nmcm::runtime::NodeConfig* config) {
  config->cluster = build.cluster;
  std::memcpy(config->model_hash, build.model_hash, sizeof config->model_hash);
  config->stage_index = build.stage_index;
  config->stage_count = build.stage_count;
  std::memcpy(config->listen.ip, build.ip, 4);
  config->listen.port = build.listen_port;
  config->has_downstream = build.has_downstream;
  std::memcpy(config->downstream.ip, build.downstream_ip, 4);
  config->downstream.port = build.downstream_port;
  config->arena = build.arena;
  config->arena_capacity = build.arena_capacity;
  config->log = log;
}

}  // namespace nmcm::app
