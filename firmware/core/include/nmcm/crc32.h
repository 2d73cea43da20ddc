// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320): the value zlib.crc32 gives.
#pragma once

#include <cstddef>
#include <cstdint>

namespace nmcm {

// `crc` continues a previous call; start with 0.
uint32_t crc32(const uint8_t* data, size_t len, uint32_t crc = 0);

}  // namespace nmcm
