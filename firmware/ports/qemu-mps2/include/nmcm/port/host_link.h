// The QEMU node's link to the host: its four byte streams (coordinator, upstream neighbour,
// downstream neighbour, observers) multiplexed over one pair of named pipes that the node's relay
// (nmcm_deploy/targets/qemu_relay.py) joins to the loopback ports, read and written through
// semihosting. A semihosting call moves a whole buffer where a CMSDK UART moves a byte per turn
// of QEMU's main loop: some 15-20 KB/s through a UART, megabytes a second through the pipes.
//
// Each stream stays what a UART was to the node: bytes without connect or close, the link
// preambles on top (nmcm/runtime/uart_network.h, firmware/apps/node-qemu), so the node runs the
// same UartNetwork and protocol code over either. The records on the pipes (docs/protocol.md,
// "Under QEMU"):
//
//   node -> relay   DATA  'D', stream, length (u16 LE), the bytes: bytes the node sends
//                   POLL  'P', 0, 10, then wait_ms and the room the node has per stream (u16 LE
//                         each): asks for what has arrived, waiting up to wait_ms if nothing has
//   relay -> node   one answer per POLL: per stream the bytes that follow (u16 LE), per stream the
//                   bytes the relay takes from now on (u16 LE), then the bytes, stream by stream
//
// The relay answers a POLL at once when it has bytes for the node, else when bytes arrive or
// wait_ms has passed. A node sends no more on a stream than the relay last said it takes, so the
// relay never holds more than it can pass on. A read that finds the pipe closed (the relay ended)
// ends the node.
#pragma once

#include <cstddef>
#include <cstdint>

#include "nmcm/port/qemu_mps2.h"

namespace nmcm::port::qemu {

class HostLink {
 public:
  static constexpr unsigned kStreams = 4;
  // Bytes of one stream held on the node's side between the pipe and the node's reads.
  static constexpr std::size_t kBufferSize = 4096;

  // Opens `<dir>/to-node` for reading and `<dir>/to-host` for writing; fatal() if either fails.
  void open(const char* dir);

  std::size_t read_some(unsigned stream, std::uint8_t* data, std::size_t n);
  std::size_t write_some(unsigned stream, const std::uint8_t* data, std::size_t n);
  // Until a byte arrives on any stream or wait_ms (at most 65535) has passed.
  void wait(std::uint32_t wait_ms);

 private:
  struct Stream {
    std::uint8_t buffer[kBufferSize];
    std::size_t head = 0;
    std::size_t count = 0;
    std::uint16_t credit = 0;       // bytes the relay takes from now on
    std::uint32_t empty_round = 0;  // the poll round in which a read last found nothing
  };

  // One POLL and its answer. True if a byte arrived.
  bool poll(std::uint16_t wait_ms);
  void read_exactly(std::uint8_t* data, std::size_t n);

  HostFile to_node_;
  HostFile to_host_;
  Stream streams_[kStreams];
  std::uint32_t round_ = 1;
  bool last_poll_moved_ = true;
};

}  // namespace nmcm::port::qemu
