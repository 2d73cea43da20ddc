"""MCU and board profiles: data files found as package resources, consistent with each other and
with the figures the project relies on (DESIGN.md, FACTS.md)."""

from __future__ import annotations

import itertools

import pytest

from nmcm_deploy import profiles
from nmcm_deploy.errors import NmcmError


def test_names() -> None:
    assert profiles.mcu_names() == ("stm32f413zh", "stm32h7a3zi")
    assert profiles.board_names() == ("nucleo-f413zh", "nucleo-h7a3zi-q")


def test_f413_figures() -> None:
    mcu = profiles.mcu("stm32f413zh")
    assert (mcu.core, mcu.clock_hz, mcu.qemu_machine) == ("cortex-m4", 100_000_000, "mps2-an386")
    assert (mcu.flash_capacity, mcu.sram_capacity) == (1_572_864, 327_680)  # DESIGN.md metrics
    assert mcu.arena.origin == 0x2000_0000 and mcu.arena.size == mcu.sram_capacity
    assert mcu.gcc_flags == ("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard", "-mthumb")
    assert (mcu.pyocd_target, mcu.pyocd_pack) == ("stm32f413zhtx", "Keil.STM32F4xx_DFP")


def test_h7a3_arena_is_axi_sram() -> None:
    mcu = profiles.mcu("stm32h7a3zi")
    assert (mcu.core, mcu.clock_hz, mcu.qemu_machine) == ("cortex-m7", 280_000_000, "mps2-an500")
    assert mcu.arena.name == "AXI_SRAM" and mcu.arena.origin == 0x2400_0000
    assert mcu.sram_capacity == mcu.arena.size == 1_048_576
    assert mcu.flash_capacity == 2_097_152
    assert sum(r.size for r in mcu.sram_regions) == 1_380 * 1024  # the "~1.4 MB in banks"
    assert mcu.region("DTCM").origin == 0x2000_0000


@pytest.mark.parametrize("name", profiles.mcu_names())
def test_mcu_regions_do_not_overlap_and_capacities_fit(name: str) -> None:
    mcu = profiles.mcu(name)
    regions = sorted((*mcu.sram_regions, *mcu.flash_regions), key=lambda r: r.origin)
    for a, b in itertools.pairwise(regions):
        assert a.end <= b.origin, (a, b)
    assert mcu.flash_capacity <= sum(r.size for r in mcu.flash_regions)
    assert mcu.sram_capacity <= mcu.arena.size
    assert 0 <= mcu.runtime_sram_reserve < mcu.sram_capacity
    assert 0 <= mcu.runtime_flash_reserve < mcu.flash_capacity


@pytest.mark.parametrize("name", profiles.board_names())
def test_board_is_consistent(name: str) -> None:
    board = profiles.board(name)
    assert board.mcu in profiles.mcu_names()
    pins = board.w5500
    # The W5500 sits on the Arduino header's SPI: D13 SCK, D12 MISO, D11 MOSI, D10 CS, D7 reset.
    assert (pins.sck, pins.miso, pins.mosi) == ("PA5", "PA6", "PA7")
    assert [board.arduino_pin(d) for d in ("D13", "D12", "D11", "D10", "D7")] == [
        pins.sck, pins.miso, pins.mosi, pins.cs, pins.reset,
    ]  # fmt: skip
    assert pins.spi == "spi1" and pins.cs == "PD14"
    assert (board.log_uart.usart, board.log_uart.tx, board.log_uart.rx) == ("usart3", "PD8", "PD9")
    assert board.hse_hz == 8_000_000


def test_d7_differs_between_the_boards() -> None:
    assert profiles.board("nucleo-f413zh").w5500.reset == "PF13"
    assert profiles.board("nucleo-h7a3zi-q").w5500.reset == "PG12"


def test_unknown_names_list_the_known_ones() -> None:
    with pytest.raises(profiles.UnknownProfile) as info:
        profiles.mcu("stm32f407vg")
    assert info.value.known == profiles.mcu_names()
    assert "known: stm32f413zh, stm32h7a3zi" in str(info.value)
    assert isinstance(info.value, NmcmError)
    with pytest.raises(profiles.UnknownProfile):
        profiles.board("../mcus/stm32f413zh")  # names only, never paths


def test_profiles_are_cached_and_frozen() -> None:
    mcu = profiles.mcu("stm32f413zh")
    assert profiles.mcu("stm32f413zh") is mcu
    with pytest.raises(AttributeError):
        mcu.clock_hz = 1  # type: ignore[misc]
