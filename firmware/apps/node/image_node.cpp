// The start-up the two firmware-image node mains share (image_node.h).
#include "image_node.h"

#include <cstdint>

#include "nmcm/port/line.h"
#include "nmcm/port/port.h"
#include "node_start.h"

// stage_blob.S: the blob's bytes in the image and their count.
extern "C" const std::uint8_t nmcm_stage_blob[];
extern "C" const std::uint32_t nmcm_stage_blob_size;

namespace nmcm::app {

void log_image_hello(const NodeBuild& build, const char* where) {
  nmcm::port::Line<224> hello;
  hello.text("nmcm node ").text(build.node).text(" (").text(build.mcu).text(")").text(where);
  hello.text(", stage ").dec(build.stage_index).text(" of ").dec(build.stage_count);
  hello.text(" of cluster ").text(build.cluster).text(": arena ").dec(build.arena_size);
  hello.text(" of ").dec(build.arena_capacity).text(" bytes, blob ").dec(nmcm_stage_blob_size);
  hello.text(" bytes");
  nmcm::port::log(hello.c_str());
}

void load_embedded_stage(nmcm::Stage& stage, const NodeBuild& build) {
  const nmcm::Status status = load_stage(stage, build, nmcm_stage_blob, nmcm_stage_blob_size);
  if (status.ok()) return;
  nmcm::port::Line<224> line;
  line.text("blob refused (").text(nmcm::status_code_name(status.code)).text("): ");
  line.text(status.message);
  if (status.subject != nullptr) {
    line.text(" [").text(status.subject).text(" ").sdec(status.index).text("]");
  }
  line.text("; built for stage ").dec(build.stage_index).text(" of ").dec(build.stage_count);
  nmcm::port::fatal(line.c_str());
}

void start_image_node(nmcm::runtime::Node& node) {
  const nmcm::Status started = node.start();
  if (started.ok()) return;
  nmcm::port::Line<160> line;
  nmcm::port::fatal(line.text("cannot start the node: ").text(started.message).c_str());
}

}  // namespace nmcm::app
