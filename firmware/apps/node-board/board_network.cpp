// make_board_network() for the Nucleo boards: the W5500 driver (firmware/drivers/w5500) on the
// port's SPI bus, and the runtime's W5500Network (firmware/runtime/w5500) over its sockets.
#include "board_network.h"

#include <cstring>

#include "nmcm/drivers/w5500/w5500.h"
#include "nmcm/port/line.h"
#include "nmcm/port/port.h"
#include "nmcm/runtime/w5500_network.h"

namespace nmcm::app {

namespace w5 = drivers::w5500;

runtime::NodeNetwork* make_board_network(const NodeBuild& build, std::uint32_t link_timeout_ms,
                                         const char** why) {
  w5::Config config{};
  std::memcpy(config.mac.octets, build.mac, sizeof config.mac.octets);
  std::memcpy(config.ip.octets, build.ip, sizeof config.ip.octets);
  std::memcpy(config.subnet.octets, build.subnet_mask, sizeof config.subnet.octets);
  std::memcpy(config.gateway.octets, build.gateway, sizeof config.gateway.octets);
  runtime::W5500Network::plan_buffers(build.has_downstream, &config);

  static w5::W5500 chip(port::w5500_bus(), port::millis);
  const w5::Status status = chip.init(config);
  if (status != w5::Status::kOk) {
    static port::Line<96> reason;
    reason.text("W5500 init failed (").text(w5::status_name(status)).text(")");
    if (status == w5::Status::kNoDevice) reason.text(": no chip answers on the SPI bus");
    *why = reason.c_str();
    return nullptr;
  }

  std::uint8_t version = 0;
  port::Line<96> line;
  line.text("W5500 up");
  if (chip.read_version(&version)) line.text(", version ").dec(version);
  if (chip.wait_link(link_timeout_ms) == w5::Status::kOk) {
    line.text(", link up");
  } else {
    line.text(", no Ethernet link yet");
  }
  port::log(line.c_str());

  runtime::W5500NetworkConfig network_config;
  network_config.has_downstream = build.has_downstream;
  network_config.clock = port::millis;
  network_config.log = port::log;
  static runtime::W5500Network network(chip, network_config);
  return &network;
}

}  // namespace nmcm::app
