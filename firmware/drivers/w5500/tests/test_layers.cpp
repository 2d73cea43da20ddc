// The lower layers: SPI frame layout, register access, counters read until stable, and TX/RX
// buffer access across the end of a socket's ring.
#include <gtest/gtest.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "nmcm/tools/w5500_emulator.h"
#include "registers.h"
#include "spi_frame.h"
#include "w5500_regs.h"

namespace nmcm::drivers::w5500 {
namespace {

using detail::frame_read;
using detail::frame_write;
using detail::Registers;
using tools::W5500Emulator;

// Records every frame (the bytes clocked out between select(true) and select(false)) and answers
// reads with a fixed byte.
class RecordingBus final : public port::SpiBus {
 public:
  void select(bool selected) override {
    if (selected) frames.emplace_back();
    selected_ = selected;
    ++selects;
  }
  bool transfer(const std::uint8_t* tx, std::uint8_t* rx, std::size_t n) override {
    for (std::size_t i = 0; i < n; ++i) {
      if (selected_) frames.back().push_back(tx != nullptr ? tx[i] : 0);
      if (rx != nullptr) rx[i] = answer;
    }
    return ok;
  }
  void reset(bool) override {}

  std::vector<std::vector<std::uint8_t>> frames;
  std::uint8_t answer = 0x5A;
  bool ok = true;
  int selects = 0;
  bool selected_ = false;
};

TEST(SpiFrame, ReadIsAddressMsbFirstThenControlByteThenData) {
  RecordingBus bus;
  std::uint8_t out[2] = {};
  ASSERT_TRUE(frame_read(bus, reg::block_socket(1), reg::Sn_SR, out, 2));
  ASSERT_EQ(bus.frames.size(), 1u);
  // Socket 1 register block = 00101, RWB = 0, OM = 00: 0b00101'0'00 = 0x28.
  EXPECT_EQ(bus.frames[0], (std::vector<std::uint8_t>{0x00, 0x03, 0x28, 0x00, 0x00}));
  EXPECT_EQ(out[0], 0x5A);
  EXPECT_EQ(out[1], 0x5A);
  EXPECT_FALSE(bus.selected_);
}

TEST(SpiFrame, WriteSetsRwbAndSendsTheData) {
  RecordingBus bus;
  const std::uint8_t data[3] = {1, 2, 3};
  ASSERT_TRUE(frame_write(bus, reg::block_tx(2), 0x1234, data, 3));
  // Socket 2 TX buffer = 01010, RWB = 1, OM = 00: 0b01010'1'00 = 0x54.
  EXPECT_EQ(bus.frames[0], (std::vector<std::uint8_t>{0x12, 0x34, 0x54, 1, 2, 3}));
  EXPECT_EQ(detail::control_byte(reg::kBlockCommon, false), 0x00);
  EXPECT_EQ(detail::control_byte(reg::block_rx(7), false), 0xF8);  // 11111'0'00
}

TEST(SpiFrame, ChipSelectIsReleasedWhenTheBusFails) {
  RecordingBus bus;
  bus.ok = false;
  std::uint8_t v = 0;
  EXPECT_FALSE(frame_read(bus, reg::kBlockCommon, reg::VERSIONR, &v, 1));
  EXPECT_EQ(bus.selects, 2);  // selected once, released once
  EXPECT_FALSE(bus.selected_);
}

TEST(Registers, SixteenBitRegistersAreBigEndian) {
  W5500Emulator emu;
  Registers regs(emu);
  ASSERT_TRUE(regs.write16(reg::kBlockCommon, reg::RTR, 0x1234));
  EXPECT_EQ(emu.peek(0, reg::RTR), 0x12);
  EXPECT_EQ(emu.peek(0, reg::RTR + 1), 0x34);
  std::uint16_t v = 0;
  ASSERT_TRUE(regs.read16(reg::kBlockCommon, reg::RTR, &v));
  EXPECT_EQ(v, 0x1234);
  std::uint8_t version = 0;
  ASSERT_TRUE(regs.read8(reg::kBlockCommon, reg::VERSIONR, &version));
  EXPECT_EQ(version, 0x04);
  ASSERT_TRUE(regs.read16(reg::block_socket(3), reg::Sn_TX_FSR, &v));
  EXPECT_EQ(v, 2048);  // reset value: the default 2 KB buffer, all free
}

// Answers each 2-byte register read with the next value of a script (the last one repeats).
class ScriptedCounterBus final : public port::SpiBus {
 public:
  explicit ScriptedCounterBus(std::vector<std::uint16_t> script) : script_(std::move(script)) {}
  void select(bool selected) override {
    if (selected) {
      byte_ = 0;
    } else if (reads_ + 1 < script_.size()) {
      ++reads_;
    }
  }
  bool transfer(const std::uint8_t*, std::uint8_t* rx, std::size_t n) override {
    for (std::size_t i = 0; i < n; ++i, ++byte_) {
      const std::uint16_t v = script_[reads_];
      if (rx != nullptr)
        rx[i] =
            byte_ == 3 ? static_cast<std::uint8_t>(v >> 8) : static_cast<std::uint8_t>(v & 0xFF);
    }
    return true;
  }
  void reset(bool) override {}

 private:
  std::vector<std::uint16_t> script_;
  std::size_t reads_ = 0;
  int byte_ = 0;
};

TEST(Registers, CountersAreReadUntilTwoReadsAgree) {
  // A torn read (0x01FF: new high byte, old low byte) followed by the settled value.
  ScriptedCounterBus bus({0x01FF, 0x0200, 0x0200});
  Registers regs(bus);
  std::uint16_t v = 0;
  ASSERT_TRUE(regs.read16_stable(reg::block_socket(0), reg::Sn_RX_RSR, &v));
  EXPECT_EQ(v, 0x0200);
}

TEST(Registers, ACounterThatNeverSettlesIsAnError) {
  std::vector<std::uint16_t> script;
  for (std::uint16_t i = 0; i < 64; ++i) script.push_back(i);
  ScriptedCounterBus bus(script);
  Registers regs(bus);
  std::uint16_t v = 0;
  EXPECT_FALSE(regs.read16_stable(reg::block_socket(0), reg::Sn_RX_RSR, &v));
}

TEST(Registers, TxWriteWrapsAtTheEndOfTheSocketRing) {
  W5500Emulator emu;
  Registers regs(emu);
  const std::uint16_t size = emu.tx_memory_size(1);
  ASSERT_EQ(size, 2048);  // default 2 KB
  std::vector<std::uint8_t> data(32);
  for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>(0xA0 + i);
  // A free-running pointer 16 bytes before the end of the ring, after the pointer has gone round
  // the 16-bit space many times: 0xFFF0 & 0x7FF = 0x7F0.
  ASSERT_TRUE(regs.write_tx(1, 0xFFF0, size, data.data(), data.size()));
  const std::uint8_t* mem = emu.tx_memory(1);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(mem[0x7F0 + i], data[i]) << i;
  for (int i = 0; i < 16; ++i) EXPECT_EQ(mem[i], data[16 + i]) << i;
  EXPECT_EQ(mem[16], 0);                  // nothing past the wrapped part
  EXPECT_EQ(mem[0x7EF], 0);               // nothing before the start
  EXPECT_EQ(emu.tx_memory(0)[0x7F0], 0);  // and nothing in the neighbouring socket's memory
}

TEST(Registers, RxReadWrapsAtTheEndOfTheSocketRing) {
  W5500Emulator emu;
  Registers regs(emu);
  const std::uint16_t size = emu.rx_memory_size(2);
  std::uint8_t* mem = emu.rx_memory(2);
  for (int i = 0; i < size; ++i) mem[i] = static_cast<std::uint8_t>(i * 7);
  std::uint8_t out[20] = {};
  // Pointer 0x1FF8 -> offset 0x7F8: 8 bytes from the end, 12 from the start.
  ASSERT_TRUE(regs.read_rx(2, 0x1FF8, size, out, sizeof out));
  for (int i = 0; i < 8; ++i) EXPECT_EQ(out[i], static_cast<std::uint8_t>((0x7F8 + i) * 7)) << i;
  for (int i = 0; i < 12; ++i) EXPECT_EQ(out[8 + i], static_cast<std::uint8_t>(i * 7)) << i;
}

TEST(Registers, BufferAccessLargerThanTheRingIsRefused) {
  W5500Emulator emu;
  Registers regs(emu);
  std::vector<std::uint8_t> big(4096);
  EXPECT_FALSE(regs.write_tx(0, 0, 2048, big.data(), big.size()));
  EXPECT_FALSE(regs.read_rx(0, 0, 2048, big.data(), big.size()));
}

}  // namespace
}  // namespace nmcm::drivers::w5500
