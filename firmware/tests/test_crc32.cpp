#include "nmcm/crc32.h"

#include <gtest/gtest.h>

namespace nmcm {
namespace {

TEST(Crc32, MatchesZlibCheckValue) {
  const uint8_t text[] = {'1', '2', '3', '4', '5', '6', '7', '8', '9'};
  EXPECT_EQ(crc32(text, sizeof text), 0xCBF43926u);  // the standard CRC-32 check value
  EXPECT_EQ(crc32(text, 0), 0u);
}

TEST(Crc32, ContinuesAcrossCalls) {
  const uint8_t text[] = {'1', '2', '3', '4', '5', '6', '7', '8', '9'};
  EXPECT_EQ(crc32(text + 4, 5, crc32(text, 4)), 0xCBF43926u);
}

}  // namespace
}  // namespace nmcm
