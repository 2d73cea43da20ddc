#include "nmcm/port/host_link.h"

#include <cstring>

#include "nmcm/port/line.h"
#include "nmcm/port/port.h"

namespace nmcm::port::qemu {

namespace {

constexpr std::uint8_t kData = 'D';
constexpr std::uint8_t kPoll = 'P';
constexpr std::size_t kRecordHeader = 4;
constexpr std::size_t kPollBody = 2 + 2 * HostLink::kStreams;
constexpr std::size_t kAnswerHeader = 4 * HostLink::kStreams;
// A poll that follows one which brought nothing waits this long for a byte, so that a node
// waiting on a peer does not spin QEMU and the relay at full speed; the relay answers at once
// when a byte comes.
constexpr std::uint16_t kQuietPollMs = 1;

void put_u16(std::uint8_t* at, std::size_t value) {
  at[0] = static_cast<std::uint8_t>(value & 0xFF);
  at[1] = static_cast<std::uint8_t>((value >> 8) & 0xFF);
}

std::uint16_t get_u16(const std::uint8_t* at) {
  return static_cast<std::uint16_t>(at[0] | (at[1] << 8));
}

}  // namespace

void HostLink::open(const char* dir) {
  Line<192> to_node;
  Line<192> to_host;
  // The relay holds both pipes open for reading and writing, so neither open waits for it.
  if (!to_node_.open(to_node.text(dir).text("/to-node").c_str(), HostFile::Mode::kRead) ||
      !to_host_.open(to_host.text(dir).text("/to-host").c_str(), HostFile::Mode::kWrite)) {
    fatal("the host link's pipes could not be opened");
  }
  poll(0);
}

void HostLink::read_exactly(std::uint8_t* data, std::size_t n) {
  while (n > 0) {
    const std::size_t got = to_node_.read(data, n);
    if (got == 0) fatal("the host link closed (its relay ended)");
    data += got;
    n -= got;
  }
}

bool HostLink::poll(std::uint16_t wait_ms) {
  std::uint8_t request[kRecordHeader + kPollBody] = {kPoll, 0, 0, 0};
  put_u16(request + 2, kPollBody);
  put_u16(request + kRecordHeader, wait_ms);
  for (unsigned s = 0; s < kStreams; ++s) {
    Stream& stream = streams_[s];
    // The bytes not read yet move to the front: the answer lands behind them.
    if (stream.head != 0) {
      std::memmove(stream.buffer, stream.buffer + stream.head, stream.count);
      stream.head = 0;
    }
    put_u16(request + kRecordHeader + 2 + 2 * s, kBufferSize - stream.count);
  }
  if (!to_host_.write(request, sizeof request)) fatal("the host link closed (write)");

  std::uint8_t answer[kAnswerHeader];
  read_exactly(answer, sizeof answer);
  bool moved = false;
  for (unsigned s = 0; s < kStreams; ++s) {
    Stream& stream = streams_[s];
    const std::size_t n = get_u16(answer + 2 * s);
    if (n > kBufferSize - stream.count) fatal("the host link's relay overran a stream");
    read_exactly(stream.buffer + stream.count, n);
    stream.count += n;
    const std::uint16_t credit = get_u16(answer + 2 * kStreams + 2 * s);
    moved = moved || n > 0 || (stream.credit == 0 && credit > 0);
    stream.credit = credit;
  }
  ++round_;
  last_poll_moved_ = moved;
  return moved;
}

std::size_t HostLink::read_some(unsigned stream_index, std::uint8_t* data, std::size_t n) {
  Stream& stream = streams_[stream_index];
  if (stream.count == 0) {
    // The first empty read of a round answers "nothing" as it is: a network looking at each
    // stream in turn then polls the relay once per turn, not once per stream.
    if (stream.empty_round != round_) {
      stream.empty_round = round_;
      return 0;
    }
    poll(last_poll_moved_ ? 0 : kQuietPollMs);
    if (stream.count == 0) {
      stream.empty_round = round_;
      return 0;
    }
  }
  const std::size_t take = n < stream.count ? n : stream.count;
  std::memcpy(data, stream.buffer + stream.head, take);
  stream.head += take;
  stream.count -= take;
  return take;
}

std::size_t HostLink::write_some(unsigned stream_index, const std::uint8_t* data, std::size_t n) {
  Stream& stream = streams_[stream_index];
  if (stream.credit == 0) poll(last_poll_moved_ ? 0 : kQuietPollMs);
  // At most the credit, a u16: always within a DATA record's u16 length.
  const std::size_t take = n < stream.credit ? n : stream.credit;
  if (take == 0) return 0;
  std::uint8_t header[kRecordHeader] = {kData, static_cast<std::uint8_t>(stream_index), 0, 0};
  put_u16(header + 2, take);
  if (!to_host_.write(header, sizeof header) || !to_host_.write(data, take)) {
    fatal("the host link closed (write)");
  }
  stream.credit = static_cast<std::uint16_t>(stream.credit - take);
  return take;
}

void HostLink::wait(std::uint32_t wait_ms) {
  poll(static_cast<std::uint16_t>(wait_ms > 0xFFFF ? 0xFFFF : wait_ms));
}

}  // namespace nmcm::port::qemu
