// init(): reset, presence check ("no W5500"), network and buffer configuration, and the
// retransmission timeouts that RTR/RCR give.
#include <gtest/gtest.h>

#include <cstdint>

#include "host_peer.h"
#include "nmcm/drivers/w5500/w5500.h"
#include "nmcm/tools/w5500_emulator.h"

namespace nmcm::drivers::w5500 {
namespace {

using test::clock_ms;
using tools::W5500Emulator;

Config node_config() {
  Config c;
  c.mac = Mac{{0x02, 0x4E, 0x4D, 0x00, 0x00, 0x01}};
  c.ip = Ip4{{192, 168, 50, 11}};
  c.subnet = Ip4{{255, 255, 255, 0}};
  c.gateway = Ip4{{192, 168, 50, 1}};
  c.idle = test::yield;
  return c;
}

// A bus with nothing on it: every byte reads the same (0xFF with MISO pulled up, 0x00 pulled
// down or shorted), or every transfer fails.
class DeadBus final : public port::SpiBus {
 public:
  explicit DeadBus(std::uint8_t value, bool ok = true) : value_(value), ok_(ok) {}
  void select(bool) override {}
  bool transfer(const std::uint8_t*, std::uint8_t* rx, std::size_t n) override {
    for (std::size_t i = 0; rx != nullptr && i < n; ++i) rx[i] = value_;
    return ok_;
  }
  void reset(bool asserted) override { reset_pulses += asserted ? 1 : 0; }
  int reset_pulses = 0;

 private:
  std::uint8_t value_;
  bool ok_;
};

TEST(Init, FindsTheChipAndProgramsTheNetwork) {
  W5500Emulator emu;
  W5500 chip(emu, clock_ms);
  Config config = node_config();
  const std::uint8_t tx_kb[kSocketCount] = {8, 2, 0, 2, 2, 2, 0, 0};  // 16 KB in all
  const std::uint8_t rx_kb[kSocketCount] = {4, 2, 2, 2, 2, 2, 2, 0};
  for (int i = 0; i < kSocketCount; ++i) {
    config.tx_kb[i] = tx_kb[i];
    config.rx_kb[i] = rx_kb[i];
  }
  ASSERT_EQ(chip.init(config), Status::kOk);
  EXPECT_TRUE(chip.initialized());

  std::uint8_t version = 0;
  ASSERT_TRUE(chip.read_version(&version));
  EXPECT_EQ(version, 0x04);
  Mac mac{};
  Ip4 ip{}, subnet{}, gateway{};
  ASSERT_EQ(chip.read_network(&mac, &ip, &subnet, &gateway), Status::kOk);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(mac.octets[i], config.mac.octets[i]);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(ip.octets[i], config.ip.octets[i]);
    EXPECT_EQ(subnet.octets[i], config.subnet.octets[i]);
    EXPECT_EQ(gateway.octets[i], config.gateway.octets[i]);
  }
  // What the chip itself holds, seen from the emulator's side of the bus.
  EXPECT_EQ(emu.peek(0, 0x000F), 192);  // SIPR
  EXPECT_EQ(emu.peek(0, 0x0012), 11);
  EXPECT_EQ(emu.peek(0, 0x0019), 0x03);  // RTR = 1000 = 0x03E8
  EXPECT_EQ(emu.peek(0, 0x001A), 0xE8);
  EXPECT_EQ(emu.peek(0, 0x001B), 3);  // RCR
  EXPECT_EQ(emu.peek(1, 0x001F), 8);  // S0_TXBUF_SIZE
  EXPECT_EQ(emu.peek(1, 0x001E), 4);  // S0_RXBUF_SIZE
  EXPECT_EQ(chip.tx_size(0), 8192);
  EXPECT_EQ(chip.rx_size(0), 4096);
  EXPECT_EQ(chip.tx_size(2), 0);
  EXPECT_EQ(emu.tx_memory_size(0), 8192);
  EXPECT_EQ(emu.config_errors(), 0u);
  EXPECT_TRUE(chip.link_up());
}

TEST(Init, ReportsNoW5500WhenTheBusReadsAllOnes) {
  DeadBus bus(0xFF);
  W5500 chip(bus, clock_ms);
  const std::uint32_t start = clock_ms();
  EXPECT_EQ(chip.init(node_config()), Status::kNoDevice);
  EXPECT_LT(clock_ms() - start, 1000u);  // bounded by reset_timeout_ms, not a hang
  EXPECT_EQ(bus.reset_pulses, 1);
  EXPECT_FALSE(chip.initialized());
  EXPECT_STREQ(status_name(Status::kNoDevice), "no-w5500");
}

TEST(Init, ReportsNoW5500WhenTheBusReadsZeros) {
  DeadBus bus(0x00);
  W5500 chip(bus, clock_ms);
  EXPECT_EQ(chip.init(node_config()), Status::kNoDevice);
}

TEST(Init, ReportsNoW5500WhenRtrIsNotAtItsResetValue) {
  // Something that happens to read 0x04 everywhere: VERSIONR passes, RTR reads 0x0404.
  DeadBus bus(0x04);
  W5500 chip(bus, clock_ms);
  EXPECT_EQ(chip.init(node_config()), Status::kNoDevice);
}

TEST(Init, ReportsABusFailure) {
  DeadBus bus(0x04, /*ok=*/false);
  W5500 chip(bus, clock_ms);
  EXPECT_EQ(chip.init(node_config()), Status::kBusError);
}

TEST(Init, RejectsBufferSizesTheChipCannotHold) {
  W5500Emulator emu;
  W5500 chip(emu, clock_ms);
  Config odd = node_config();
  odd.rx_kb[3] = 3;
  EXPECT_EQ(chip.init(odd), Status::kInvalidArgument);
  Config too_much = node_config();
  too_much.tx_kb[0] = 16;  // 16 + 7 x 2 KB > 16 KB
  EXPECT_EQ(chip.init(too_much), Status::kInvalidArgument);
  EXPECT_FALSE(chip.initialized());
}

TEST(Init, StreamsDoNothingBeforeInit) {
  W5500Emulator emu;
  W5500 chip(emu, clock_ms);
  W5500Stream stream(chip, 0);
  EXPECT_EQ(stream.connect(Ip4{{127, 0, 0, 1}}, 9, 100), net::IoStatus::kError);
  EXPECT_EQ(stream.listen(9), net::IoStatus::kError);
  EXPECT_EQ(chip.wait_link(0), Status::kNotInitialized);
}

TEST(Init, LinkStateFollowsThePhy) {
  W5500Emulator emu;
  W5500 chip(emu, clock_ms);
  ASSERT_EQ(chip.init(node_config()), Status::kOk);
  EXPECT_EQ(chip.wait_link(100), Status::kOk);
  emu.set_link(false);
  EXPECT_FALSE(chip.link_up());
  EXPECT_EQ(chip.wait_link(20), Status::kTimeout);
}

TEST(RetransmissionTimeouts, MatchTheDatasheetExample) {
  // §4.1 RCR: RTR = 2000, RCR = 8 gives ARPTO 1.8 s and TCPTO 31.8 s (the chip's defaults).
  EXPECT_EQ(arp_timeout_ms(2000, 8), 1800u);
  EXPECT_EQ(tcp_timeout_ms(2000, 8), 31800u);
  // Fewer retries than doublings: plain sum 100 + 200 + 400 ms.
  EXPECT_EQ(tcp_timeout_ms(1000, 2), 700u);
  // The driver's default notices a dead peer in 1.5 s.
  const Config defaults{};
  EXPECT_EQ(tcp_timeout_ms(defaults.retry_time_100us, defaults.retry_count), 1500u);
}

}  // namespace
}  // namespace nmcm::drivers::w5500
