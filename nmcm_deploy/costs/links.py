"""What moving a frame through a node's W5500 costs, for the schedule simulation (schedule.py).

A node's core drives the W5500 over SPI (firmware/drivers/w5500): sending a frame keeps it busy
while the frame's bytes and the driver's register traffic cross SPI at the board's SCK; the chip
then puts the frame on 100 Mbit/s Ethernet on its own (the wire time); receiving keeps the
receiver's core busy while the bytes come back over SPI. The figures (SPI kernel clock, the
share of SCK that carries bytes, the register traffic per send) are the board profile's
``w5500_link``, each with its source and uncertainty; SCK follows from the kernel clock as the
firmware divides it.
"""

from __future__ import annotations

from dataclasses import dataclass

from nmcm_deploy.profiles import BoardProfile

# 100BASE-TX, the W5500's PHY; a TCP segment carries at most 1460 bytes of a frame and costs
# 78 bytes on the wire besides (preamble 8, Ethernet 14 + FCS 4, IPv4 20, TCP 20, gap 12).
ETHERNET_BPS = 100e6
TCP_SEGMENT = 1460
SEGMENT_OVERHEAD = 78
# The SCK the W5500 pins allow unless the build overrides it (firmware/ports/stm32/include/nmcm/
# port/stm32_w5500_pins.h, NMCM_W5500_SPI_MAX_HZ).
DEFAULT_SPI_MAX_HZ = 25_000_000


def spi_sck_hz(kernel_hz: float, max_hz: float = DEFAULT_SPI_MAX_HZ) -> float:
    """The SCK the firmware picks: the kernel clock divided by the smallest power of two from 2
    to 256 that brings it to ``max_hz`` or below (stm32_spi.h, spi_divider_code)."""
    divider = 2
    while kernel_hz / divider > max_hz and divider < 256:
        divider *= 2
    return kernel_hz / divider


def wire_s(frame: int) -> float:
    """Seconds a frame of ``frame`` bytes takes on 100 Mbit/s Ethernet, in TCP segments."""
    segments = max(1, -(-frame // TCP_SEGMENT))
    return 8 * (frame + segments * SEGMENT_OVERHEAD) / ETHERNET_BPS


@dataclass(frozen=True)
class W5500Link:
    """One node's W5500 (schedule.Link)."""

    sck_hz: float
    efficiency: float  # share of SCK cycles that carry bytes
    overhead_bytes: float  # register traffic per send or receive

    @classmethod
    def of_board(cls, board: BoardProfile, spi_max_hz: float = DEFAULT_SPI_MAX_HZ) -> W5500Link:
        link = board.link
        return cls(
            spi_sck_hz(link.spi_kernel_hz.value, spi_max_hz),
            link.spi_efficiency.value,
            link.send_overhead_bytes.value,
        )

    def spi_s(self, frame: int) -> float:
        return 8 * (frame + self.overhead_bytes) / (self.sck_hz * self.efficiency)

    def send_s(self, frame: int) -> float:
        return self.spi_s(frame)

    def receive_s(self, frame: int) -> float:
        return self.spi_s(frame)

    def wire_s(self, frame: int) -> float:
        return wire_s(frame)
