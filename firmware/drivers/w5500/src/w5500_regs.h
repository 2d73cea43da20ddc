// The W5500 register map, with the datasheet's names (WIZnet W5500 datasheet v1.0.x: §2.2 SPI
// frame, §3 register and memory organization, §4.1 common registers, §4.2 socket registers).
// Private to the driver: nothing outside src/ should need an address. The emulator under
// tools/w5500_emulator keeps its own copy on purpose, so that a wrong address here shows up as a
// failing test instead of agreeing with itself.
#pragma once

#include <cstdint>

namespace nmcm::drivers::w5500::reg {

// --- SPI frame, control phase (§2.2.2): BSB[4:0] | RWB | OM[1:0] ------------------------------
constexpr std::uint8_t kRwbWrite = 0x04;  // RWB = 1: write
constexpr std::uint8_t kOmVdm = 0x00;  // variable-length data mode: CS high ends the frame (§2.3)

// Block select bits (§2.2.2, table "Block Select Bits"): common registers, then per socket n its
// register block, TX buffer and RX buffer at 4n+1, 4n+2, 4n+3.
constexpr std::uint8_t kBlockCommon = 0x00;
constexpr std::uint8_t block_socket(std::uint8_t n) { return static_cast<std::uint8_t>(4 * n + 1); }
constexpr std::uint8_t block_tx(std::uint8_t n) { return static_cast<std::uint8_t>(4 * n + 2); }
constexpr std::uint8_t block_rx(std::uint8_t n) { return static_cast<std::uint8_t>(4 * n + 3); }

constexpr std::uint8_t kSocketCount = 8;
// 16 KB of TX memory and 16 KB of RX memory shared by the sockets (§3.3).
constexpr std::uint16_t kBufferMemoryKb = 16;

// --- Common registers (§4.1); multi-byte registers are big-endian (MSB at the lower address) --
constexpr std::uint16_t MR = 0x0000;        // mode
constexpr std::uint16_t GAR = 0x0001;       // gateway address, 4 bytes
constexpr std::uint16_t SUBR = 0x0005;      // subnet mask, 4 bytes
constexpr std::uint16_t SHAR = 0x0009;      // source hardware (MAC) address, 6 bytes
constexpr std::uint16_t SIPR = 0x000F;      // source IP address, 4 bytes
constexpr std::uint16_t INTLEVEL = 0x0013;  // interrupt low-level timer, 2 bytes
constexpr std::uint16_t IR = 0x0015;        // interrupt
constexpr std::uint16_t IMR = 0x0016;       // interrupt mask
constexpr std::uint16_t SIR = 0x0017;       // socket interrupt
constexpr std::uint16_t SIMR = 0x0018;      // socket interrupt mask
constexpr std::uint16_t RTR = 0x0019;       // retry time, 2 bytes, unit 100 us
constexpr std::uint16_t RCR = 0x001B;       // retry count
constexpr std::uint16_t PHYCFGR = 0x002E;   // PHY configuration and status
constexpr std::uint16_t VERSIONR = 0x0039;  // chip version

constexpr std::uint8_t MR_RST = 0x80;  // software reset; reads 1 until the reset is done

constexpr std::uint8_t PHYCFGR_LNK = 0x01;  // link up
constexpr std::uint8_t PHYCFGR_SPD = 0x02;  // 100 Mbit/s
constexpr std::uint8_t PHYCFGR_DPX = 0x04;  // full duplex

// Reset values the presence check relies on (§4.1 VERSIONR "always 0x04"; RTR reset 0x07D0).
constexpr std::uint8_t kVersion = 0x04;
constexpr std::uint16_t kRtrReset = 0x07D0;
constexpr std::uint8_t kRcrReset = 0x08;

// --- Socket registers (§4.2), in block_socket(n) ---------------------------------------------
constexpr std::uint16_t Sn_MR = 0x0000;          // mode (protocol, flags)
constexpr std::uint16_t Sn_CR = 0x0001;          // command
constexpr std::uint16_t Sn_IR = 0x0002;          // interrupt (write 1 to clear)
constexpr std::uint16_t Sn_SR = 0x0003;          // status
constexpr std::uint16_t Sn_PORT = 0x0004;        // source port, 2 bytes
constexpr std::uint16_t Sn_DHAR = 0x0006;        // destination MAC, 6 bytes
constexpr std::uint16_t Sn_DIPR = 0x000C;        // destination IP, 4 bytes
constexpr std::uint16_t Sn_DPORT = 0x0010;       // destination port, 2 bytes
constexpr std::uint16_t Sn_MSSR = 0x0012;        // maximum segment size, 2 bytes
constexpr std::uint16_t Sn_TOS = 0x0015;         // IP type of service
constexpr std::uint16_t Sn_TTL = 0x0016;         // IP time to live
constexpr std::uint16_t Sn_RXBUF_SIZE = 0x001E;  // RX buffer size in KB: 0, 1, 2, 4, 8, 16
constexpr std::uint16_t Sn_TXBUF_SIZE = 0x001F;  // TX buffer size in KB: 0, 1, 2, 4, 8, 16
constexpr std::uint16_t Sn_TX_FSR = 0x0020;      // TX free size, 2 bytes (read-only)
constexpr std::uint16_t Sn_TX_RD = 0x0022;       // TX read pointer, 2 bytes (read-only)
constexpr std::uint16_t Sn_TX_WR = 0x0024;       // TX write pointer, 2 bytes
constexpr std::uint16_t Sn_RX_RSR = 0x0026;      // RX received size, 2 bytes (read-only)
constexpr std::uint16_t Sn_RX_RD = 0x0028;       // RX read pointer, 2 bytes
constexpr std::uint16_t Sn_RX_WR = 0x002A;       // RX write pointer, 2 bytes (read-only)
constexpr std::uint16_t Sn_IMR = 0x002C;         // interrupt mask
constexpr std::uint16_t Sn_FRAG = 0x002D;        // IP fragment offset, 2 bytes
constexpr std::uint16_t Sn_KPALVTR = 0x002F;     // keep-alive timer, unit 5 s

// Sn_MR: protocol in P[3:0]; ND ("no delayed ACK") in bit 5 for TCP.
constexpr std::uint8_t Sn_MR_TCP = 0x01;
constexpr std::uint8_t Sn_MR_ND = 0x20;

// Sn_CR commands. The chip clears Sn_CR to 0 once it has accepted a command; the command may
// still be in progress then, so its outcome is read from Sn_SR / Sn_IR.
constexpr std::uint8_t Sn_CR_OPEN = 0x01;
constexpr std::uint8_t Sn_CR_LISTEN = 0x02;
constexpr std::uint8_t Sn_CR_CONNECT = 0x04;
constexpr std::uint8_t Sn_CR_DISCON = 0x08;
constexpr std::uint8_t Sn_CR_CLOSE = 0x10;
constexpr std::uint8_t Sn_CR_SEND = 0x20;
constexpr std::uint8_t Sn_CR_RECV = 0x40;

// Sn_IR bits.
constexpr std::uint8_t Sn_IR_CON = 0x01;      // connection established
constexpr std::uint8_t Sn_IR_DISCON = 0x02;   // FIN (or FIN/ACK) received from the peer
constexpr std::uint8_t Sn_IR_RECV = 0x04;     // data received
constexpr std::uint8_t Sn_IR_TIMEOUT = 0x08;  // ARP or TCP retransmission gave up (ARPTO/TCPTO)
constexpr std::uint8_t Sn_IR_SENDOK = 0x10;   // the last SEND completed

// Sn_SR values: stable states, then the transient ones seen during handshakes.
constexpr std::uint8_t SOCK_CLOSED = 0x00;
constexpr std::uint8_t SOCK_INIT = 0x13;
constexpr std::uint8_t SOCK_LISTEN = 0x14;
constexpr std::uint8_t SOCK_SYNSENT = 0x15;
constexpr std::uint8_t SOCK_SYNRECV = 0x16;
constexpr std::uint8_t SOCK_ESTABLISHED = 0x17;
constexpr std::uint8_t SOCK_FIN_WAIT = 0x18;
constexpr std::uint8_t SOCK_CLOSING = 0x1A;
constexpr std::uint8_t SOCK_TIME_WAIT = 0x1B;
constexpr std::uint8_t SOCK_CLOSE_WAIT = 0x1C;
constexpr std::uint8_t SOCK_LAST_ACK = 0x1D;
constexpr std::uint8_t SOCK_UDP = 0x22;
constexpr std::uint8_t SOCK_MACRAW = 0x42;

}  // namespace nmcm::drivers::w5500::reg
