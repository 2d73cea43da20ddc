// Helpers shared by the nmcm_net tests (host only: std containers are fine here).
#pragma once

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "nmcm/net/transport.h"

namespace nmcm::net::test {

inline std::string vectors_dir() { return NMCM_PROTOCOL_VECTORS_DIR; }

inline std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

inline std::vector<uint8_t> read_vector(const std::string& name) {
  return read_file(vectors_dir() + "/" + name + ".bin");
}

// A Transport over memory: what is sent is appended to `sent`; recv_some hands out `incoming`
// in chunks of at most `chunk` bytes, then reports kClosed (or kTimeout if `stall_at_end`).
class MemoryTransport final : public Transport {
 public:
  IoStatus send_all(const void* data, size_t len, uint32_t) override {
    const auto* p = static_cast<const uint8_t*>(data);
    sent.insert(sent.end(), p, p + len);
    ++send_calls;
    return IoStatus::kOk;
  }
  IoResult recv_some(void* data, size_t capacity, uint32_t) override {
    if (pos == incoming.size()) {
      return IoResult{stall_at_end ? IoStatus::kTimeout : IoStatus::kClosed, 0};
    }
    size_t n = incoming.size() - pos;
    if (n > capacity) n = capacity;
    if (n > chunk) n = chunk;
    auto* out = static_cast<uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) out[i] = incoming[pos + i];
    pos += n;
    return IoResult{IoStatus::kOk, n};
  }
  void close() override { closed = true; }

  std::vector<uint8_t> sent;
  std::vector<uint8_t> incoming;
  size_t pos = 0;
  size_t chunk = SIZE_MAX;
  bool stall_at_end = false;
  bool closed = false;
  int send_calls = 0;
};

inline std::string hex(const uint8_t* p, size_t n) {
  std::string s;
  char buf[3];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, "%02x", p[i]);
    s += buf;
  }
  return s;
}

}  // namespace nmcm::net::test
