// What the two firmware-image node mains share (../node-board/main_board.cpp on a Nucleo board,
// ../node-qemu/main_qemu.cpp under QEMU): the stage blob embedded in the image
// (../node-board/stage_blob.S), and a start-up that stops for good with one log line
// (port::fatal) when something is wrong, since an image has nobody to return an exit code to.
#pragma once

#include "nmcm/runtime/node.h"
#include "nmcm/stage.h"
#include "node_app.h"

namespace nmcm::app {

// The node's first log line: which node, MCU, stage and cluster the image was built for, its arena
// and its blob. `where`: "" on a board, " on qemu-mps2" under QEMU.
void log_image_hello(const NodeBuild& build, const char* where);

// Loads the embedded blob into `stage`, or stops: "blob refused (<code>): <why>; built for stage
// <i> of <n>".
void load_embedded_stage(nmcm::Stage& stage, const NodeBuild& build);

// Starts `node`, or stops: "cannot start the node: <why>".
void start_image_node(nmcm::runtime::Node& node);

}  // namespace nmcm::app
