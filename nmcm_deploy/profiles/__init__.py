"""MCU and board profiles: what nmcm knows about each part and each board, read from YAML data.

One file per MCU (``mcus/<name>.yaml``) and per board (``boards/<name>.yaml``); adding an MCU or a
board means adding a file, no code. Files are package data, found through importlib.resources.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import yaml

from nmcm_deploy.errors import NmcmError

_SUFFIX = ".yaml"


class UnknownProfile(NmcmError):
    """No MCU or board profile of that name; ``known`` lists the names that exist."""

    def __init__(self, kind: str, name: str, known: tuple[str, ...]) -> None:
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(known) or 'none'}")
        self.kind = kind
        self.name = name
        self.known = known


class ProfileError(NmcmError):
    """A profile file is malformed (a bug in nmcm's data, not in the user's manifest)."""


@dataclass(frozen=True)
class MemoryRegion:
    name: str
    origin: int
    size: int

    @property
    def end(self) -> int:
        """One past the last address."""
        return self.origin + self.size


@dataclass(frozen=True)
class Figure:
    """An assumed figure of the cost model: its value, how far off it may be (relative: 0.3 means
    the true value is expected within +-30%), and where it comes from."""

    value: float
    uncertainty: float
    source: str


def _figure(raw: Any) -> Figure:
    figure = Figure(float(raw["value"]), float(raw["uncertainty"]), str(raw["source"]).strip())
    if figure.value <= 0 or not 0 <= figure.uncertainty < 1 or not figure.source:
        raise ValueError("a figure needs a positive value, an uncertainty in [0, 1) and a source")
    return figure


@dataclass(frozen=True)
class McuProfile:
    name: str
    description: str
    core: str  # "cortex-m4" | "cortex-m7"
    fpu: str  # gcc's -mfpu value
    clock_hz: int
    coremark_per_mhz: float
    flash_regions: tuple[MemoryRegion, ...]
    sram_regions: tuple[MemoryRegion, ...]
    arena_region: str
    flash_capacity: int  # bytes usable for code + blob
    sram_capacity: int  # bytes usable for the arena and what shares its region
    runtime_sram_reserve: int  # estimated SRAM the firmware takes besides the arena
    runtime_flash_reserve: int  # estimated flash the firmware code takes besides the blob
    gcc_flags: tuple[str, ...]
    qemu_machine: str
    pyocd_target: str
    pyocd_pack: str  # CMSIS pack family the pyOCD target needs
    # Cost model: core clock cycles per instruction of the kernels' code (flash wait states and
    # caches included), turning the calibrated instruction counts into time.
    cycles_per_instruction: Figure

    @property
    def arena(self) -> MemoryRegion:
        """The SRAM region that holds the arena."""
        return self.region(self.arena_region)

    def region(self, name: str) -> MemoryRegion:
        for region in (*self.sram_regions, *self.flash_regions):
            if region.name == name:
                return region
        raise KeyError(name)


@dataclass(frozen=True)
class W5500Pins:
    """Where a board's W5500 is wired by default."""

    spi: str  # "spi1"
    sck: str
    miso: str
    mosi: str
    cs: str
    reset: str
    interrupt: str | None


@dataclass(frozen=True)
class UartPins:
    usart: str
    tx: str
    rx: str
    baud: int


@dataclass(frozen=True)
class Led:
    name: str
    color: str
    pin: str


@dataclass(frozen=True)
class W5500Link:
    """What moving bytes through the board's W5500 costs, for the cost model: the SPI kernel clock
    the firmware divides into SCK, and the share of SCK that carries frame bytes."""

    spi_kernel_hz: Figure
    spi_efficiency: Figure  # payload bits per SCK cycle, the driver's gaps and polling included
    send_overhead_bytes: Figure  # SPI bytes of register traffic per send or receive besides data


@dataclass(frozen=True)
class BoardProfile:
    name: str
    description: str
    mcu: str
    hse_hz: int
    hse_bypass: bool  # True: an external clock (the ST-LINK's MCO), not a crystal
    w5500: W5500Pins
    log_uart: UartPins
    leds: tuple[Led, ...]
    user_button: str
    arduino_header: tuple[tuple[str, str], ...]  # ("D10", "PD14"), ...
    link: W5500Link

    def arduino_pin(self, label: str) -> str:
        """The MCU pin behind an Arduino header label such as ``D10``."""
        for header_label, pin in self.arduino_header:
            if header_label == label:
                return pin
        raise KeyError(label)


def _folder(kind: str) -> Traversable:
    return resources.files(__name__).joinpath(kind)


@functools.cache
def _names(kind: str) -> tuple[str, ...]:
    folder = _folder(kind)
    return tuple(
        sorted(
            entry.name[: -len(_SUFFIX)]
            for entry in folder.iterdir()
            if entry.name.endswith(_SUFFIX) and entry.is_file()
        )
    )


def mcu_names() -> tuple[str, ...]:
    """Names of the MCUs nmcm has a profile for, sorted."""
    return _names("mcus")


def board_names() -> tuple[str, ...]:
    """Names of the boards nmcm has a profile for, sorted."""
    return _names("boards")


def _read(kind: str, label: str, name: str, known: tuple[str, ...]) -> dict[str, Any]:
    # Only names from the listing are opened, so a manifest cannot point this at another file.
    if name not in known:
        raise UnknownProfile(label, name, known)
    text = _folder(kind).joinpath(name + _SUFFIX).read_text(encoding="utf-8")
    data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if not isinstance(data, dict) or data.get("name") != name:
        raise ProfileError(f"{kind}/{name}{_SUFFIX}: not a mapping whose name is {name!r}")
    return data


def _regions(items: list[dict[str, Any]]) -> tuple[MemoryRegion, ...]:
    return tuple(MemoryRegion(str(r["name"]), int(r["origin"]), int(r["size"])) for r in items)


@functools.cache
def mcu(name: str) -> McuProfile:
    """The profile of MCU ``name``; raises UnknownProfile listing the known MCUs."""
    d = _read("mcus", "MCU", name, mcu_names())
    try:
        profile = McuProfile(
            name=name,
            description=str(d["description"]),
            core=str(d["core"]),
            fpu=str(d["fpu"]),
            clock_hz=int(d["clock_hz"]),
            coremark_per_mhz=float(d["coremark_per_mhz"]),
            flash_regions=_regions(d["flash_regions"]),
            sram_regions=_regions(d["sram_regions"]),
            arena_region=str(d["arena_region"]),
            flash_capacity=int(d["flash_capacity"]),
            sram_capacity=int(d["sram_capacity"]),
            runtime_sram_reserve=int(d["runtime_reserve"]["sram"]),
            runtime_flash_reserve=int(d["runtime_reserve"]["flash"]),
            gcc_flags=tuple(str(f) for f in d["gcc_flags"]),
            qemu_machine=str(d["qemu_machine"]),
            pyocd_target=str(d["pyocd"]["target"]),
            pyocd_pack=str(d["pyocd"]["pack"]),
            cycles_per_instruction=_figure(d["cost"]["cycles_per_instruction"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ProfileError(f"mcus/{name}{_SUFFIX} is malformed: {exc!r}") from exc
    if profile.arena_region not in {r.name for r in profile.sram_regions}:
        raise ProfileError(f"mcus/{name}{_SUFFIX}: arena_region is not one of its SRAM regions")
    return profile


@functools.cache
def board(name: str) -> BoardProfile:
    """The profile of board ``name``; raises UnknownProfile listing the known boards."""
    d = _read("boards", "board", name, board_names())
    try:
        pins = d["w5500"]
        uart = d["log_uart"]
        return BoardProfile(
            name=name,
            description=str(d["description"]),
            mcu=str(d["mcu"]),
            hse_hz=int(d["hse"]["hz"]),
            hse_bypass=bool(d["hse"]["bypass"]),
            w5500=W5500Pins(
                spi=str(pins["spi"]),
                sck=str(pins["sck"]),
                miso=str(pins["miso"]),
                mosi=str(pins["mosi"]),
                cs=str(pins["cs"]),
                reset=str(pins["reset"]),
                interrupt=str(pins["interrupt"]) if pins.get("interrupt") else None,
            ),
            log_uart=UartPins(
                str(uart["usart"]), str(uart["tx"]), str(uart["rx"]), int(uart["baud"])
            ),
            leds=tuple(Led(str(x["name"]), str(x["color"]), str(x["pin"])) for x in d["leds"]),
            user_button=str(d["user_button"]),
            arduino_header=tuple((str(k), str(v)) for k, v in d["arduino_header"].items()),
            link=W5500Link(
                spi_kernel_hz=_figure(d["w5500_link"]["spi_kernel_hz"]),
                spi_efficiency=_figure(d["w5500_link"]["spi_efficiency"]),
                send_overhead_bytes=_figure(d["w5500_link"]["send_overhead_bytes"]),
            ),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProfileError(f"boards/{name}{_SUFFIX} is malformed: {exc!r}") from exc
