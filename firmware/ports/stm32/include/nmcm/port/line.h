// A fixed-capacity line of log text built from pieces, for code that must not use printf (no heap,
// no locale, no float formatting pulled into the image): fault handlers, ports, small apps.
//
//   nmcm::port::Line<80> line;
//   nmcm::port::log(line.text("took ").dec(cycles).text(" cycles").c_str());
//
// Text beyond the capacity is dropped; the line always stays NUL-terminated.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nmcm::port {

template <std::size_t kCapacity>
class Line {
  static_assert(kCapacity >= 2, "room for one character and the terminator");

 public:
  Line() { buf_[0] = '\0'; }

  Line& text(const char* s) {
    while (*s != '\0') {
      put(*s++);
    }
    return *this;
  }

  Line& dec(std::uint64_t value) {
    char digits[20];  // 2^64 - 1 has 20 decimal digits
    std::size_t n = 0;
    do {
      digits[n++] = static_cast<char>('0' + value % 10);
      value /= 10;
    } while (value != 0);
    while (n > 0) {
      put(digits[--n]);
    }
    return *this;
  }

  Line& sdec(std::int64_t value) {
    if (value < 0) {
      put('-');
      // Negate in unsigned arithmetic: -INT64_MIN does not fit an int64_t.
      return dec(~static_cast<std::uint64_t>(value) + 1);
    }
    return dec(static_cast<std::uint64_t>(value));
  }

  // "0x" and eight hex digits: register dumps line up.
  Line& hex(std::uint32_t value) {
    text("0x");
    for (int shift = 28; shift >= 0; shift -= 4) {
      put("0123456789abcdef"[(value >> shift) & 0xFu]);
    }
    return *this;
  }

  const char* c_str() const { return buf_; }
  std::size_t size() const { return len_; }

 private:
  void put(char c) {
    if (len_ + 1 < kCapacity) {
      buf_[len_++] = c;
      buf_[len_] = '\0';
    }
  }

  char buf_[kCapacity];
  std::size_t len_ = 0;
};

}  // namespace nmcm::port
