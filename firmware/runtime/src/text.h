// A line of text built in a fixed buffer: log lines and ERROR reasons without printf (which on a
// board pulls in a large library, and for some formats the heap). Text past the capacity is cut.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nmcm::runtime {

// Copies at most `capacity` - 1 characters of `src` and a NUL.
inline void copy_text(char* dst, size_t capacity, const char* src) {
  size_t n = 0;
  while (src != nullptr && n + 1 < capacity && src[n] != '\0') {
    dst[n] = src[n];
    ++n;
  }
  dst[n] = '\0';
}

class Text {
 public:
  static constexpr size_t kCapacity = 200;  // = kMaxErrorText: any Text fits an ERROR reason

  Text() { buf_[0] = '\0'; }

  Text& s(const char* text) {
    while (text != nullptr && *text != '\0') put(*text++);
    return *this;
  }

  Text& u(uint64_t value) {
    char digits[20];
    int n = 0;
    do {
      digits[n++] = static_cast<char>('0' + value % 10);
      value /= 10;
    } while (value != 0);
    while (n > 0) put(digits[--n]);
    return *this;
  }

  Text& hex(const uint8_t* bytes, size_t count) {
    static const char kDigits[] = "0123456789abcdef";
    for (size_t i = 0; i < count; ++i) {
      put(kDigits[bytes[i] >> 4]);
      put(kDigits[bytes[i] & 0xF]);
    }
    return *this;
  }

  Text& ip(const uint8_t octets[4], uint16_t port) {
    for (int i = 0; i < 4; ++i) {
      if (i > 0) put('.');
      u(octets[i]);
    }
    return s(":").u(port);
  }

  // Text from a peer (an ERROR reason): control characters become '?', so a log line stays a line.
  Text& quoted(const char* text) {
    put('"');
    while (text != nullptr && *text != '\0') {
      const char c = *text++;
      put(static_cast<unsigned char>(c) < 0x20 || c == 0x7F ? '?' : c);
    }
    put('"');
    return *this;
  }

  const char* c_str() const { return buf_; }

 private:
  void put(char c) {
    if (len_ < kCapacity) {
      buf_[len_++] = c;
      buf_[len_] = '\0';
    }
  }

  char buf_[kCapacity + 1];
  size_t len_ = 0;
};

}  // namespace nmcm::runtime
