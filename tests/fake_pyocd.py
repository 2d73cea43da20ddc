"""A stand-in for pyOCD's API, the one boundary nmcm's tests fake (no probe or board exists here).

It offers what ``nmcm_deploy/flash/pyocd_session.py`` uses — ``ConnectHelper``,
``FileProgrammer``, ``exceptions`` — with pyOCD 0.46's behaviour where it matters, and is strict
where pyOCD would hang: a call with ``blocking=True`` or one that would prompt on stdin fails the
test instead. Every call is logged with its arguments so tests can assert them.

In-process tests build a ``FakePyocd`` and put it in ``pyocd_session._api``. A subprocess
(``python -m nmcm_deploy probes``) imports this module by name through ``$NMCM_PYOCD_FAKE``; its
boards then come from the JSON file named by ``$NMCM_FAKE_PYOCD_WORLD`` and its calls go to the
JSON-lines file ``$NMCM_FAKE_PYOCD_LOG``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

# The pack family that makes each pack target known to pyOCD (the MCU profiles say the same).
PACK_TARGETS = {
    "stm32f413zhtx": "keil.stm32f4xx_dfp",
    "stm32h7a3zitxq": "keil.stm32h7xx_dfp",
}
ERASED = 0xFF


class exceptions:  # mirrors the module pyocd.core.exceptions
    class Error(RuntimeError):
        pass

    class TargetSupportError(Error):
        pass

    class ProbeError(Error):
        pass

    class TargetError(Error):
        pass

    class FlashFailure(TargetError):
        def __init__(self, *args: Any, address: int | None = None) -> None:
            super().__init__(*args)
            self.address = address

        def __str__(self) -> str:
            text = super().__str__()
            return f"{text} (address 0x{self.address:08x})" if self.address is not None else text


class BoardInfo(NamedTuple):
    name: str
    target: str | None = None


@dataclass
class FakeBoard:
    """A probe and the board behind it: its flash, and what goes wrong with it."""

    unique_id: str
    board_target: str | None = None  # what pyOCD's board table would say (None: unknown)
    vendor_name: str = "STMicroelectronics"
    product_name: str = "STM32 STLink"
    flash_base: int = 0x08000000
    flash_size: int = 0x200000
    program_fails_at: int | None = None  # the flash algorithm reports a failure here
    corrupt_at: int | None = None  # programming "succeeds" but this byte reads back wrong
    connect_fails: str | None = None  # opening the session fails: the MCU does not answer
    on_reset: Callable[[FakeBoard], None] | None = None  # what the firmware does after a reset
    flash: bytearray = field(default_factory=bytearray)
    ram: dict[int, int] = field(default_factory=dict)  # RAM by address; unwritten bytes read 0
    resets: int = 0
    sessions_opened: int = 0

    def __post_init__(self) -> None:
        if not self.flash:
            self.flash = bytearray([ERASED]) * self.flash_size

    @property
    def description(self) -> str:
        return f"{self.board_target or 'unknown board'} [{self.product_name}]"

    @property
    def associated_board_info(self) -> BoardInfo | None:
        return BoardInfo("NUCLEO", self.board_target.upper()) if self.board_target else None


class FakePyocd:
    """One fake world: its boards, its call log, and pyOCD's three entry points bound to it."""

    def __init__(self, boards: list[FakeBoard] | None = None, log: Path | None = None) -> None:
        self.boards = list(boards or [])
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.log = log
        self.exceptions = exceptions
        self.ConnectHelper = _ConnectHelper(self)
        self.FileProgrammer = _file_programmer(self)

    def record(self, name: str, **kwargs: Any) -> None:
        self.calls.append((name, kwargs))
        if self.log is not None:
            with open(self.log, "a") as fh:
                fh.write(json.dumps({"call": name, **kwargs}, default=str) + "\n")

    def board(self, uid: str) -> FakeBoard:
        return next(b for b in self.boards if b.unique_id == uid)

    def matching(self, unique_id: str | None) -> list[FakeBoard]:
        # pyOCD's DebugProbeAggregator: an exact full-ID match first, else a substring match.
        if unique_id is None:
            return list(self.boards)
        uid = unique_id.split(":", 1)[1] if ":" in unique_id else unique_id
        exact = [b for b in self.boards if b.unique_id == uid]
        if exact:
            return exact
        return [b for b in self.boards if uid.lower() in b.unique_id.lower()]


class _ConnectHelper:
    def __init__(self, world: FakePyocd) -> None:
        self.world = world

    def get_all_connected_probes(
        self, blocking: bool = True, unique_id: str | None = None
    ) -> list[FakeBoard]:
        self.world.record("get_all_connected_probes", blocking=blocking, unique_id=unique_id)
        found = self.world.matching(unique_id)
        if blocking and not found:
            raise AssertionError("pyOCD would wait here forever for a probe (blocking=True)")
        return found

    def session_with_chosen_probe(
        self,
        blocking: bool = True,
        return_first: bool = False,
        unique_id: str | None = None,
        auto_open: bool = True,
        options: dict[str, Any] | None = None,
    ) -> FakeSession | None:
        self.world.record(
            "session_with_chosen_probe",
            blocking=blocking,
            return_first=return_first,
            unique_id=unique_id,
            options=options,
        )
        found = self.world.matching(unique_id)
        if not found:
            if blocking:
                raise AssertionError("pyOCD would wait here forever for a probe (blocking=True)")
            return None
        if len(found) > 1 and not return_first:
            if unique_id is None:
                raise AssertionError("pyOCD would prompt on stdin to choose a probe")
            return None  # pyOCD prints the matches and gives up
        return FakeSession(self.world, found[0], options or {})


class FakeSession:
    def __init__(self, world: FakePyocd, board: FakeBoard, options: dict[str, Any]) -> None:
        # As pyOCD's Session: its Board reads the packs and creates the target right here.
        self.world = world
        self.board = board
        self.options = options
        self.is_open = False
        self._target: FakeTarget | None = None
        target = options.get("target_override")
        packs = options.get("pack") or []
        packs = [packs] if isinstance(packs, str) else packs
        for pack in packs:
            if not Path(pack).is_file():
                raise exceptions.Error(f"pack file {pack} does not exist")
        families = {Path(p).name.lower().rsplit(".", 4)[0] for p in packs}
        if target not in PACK_TARGETS or PACK_TARGETS[target] not in families:
            raise exceptions.TargetSupportError(
                f"Target type {target} not recognized. Use 'pyocd list --targets' to see "
                "currently available target types."
            )

    def open(self) -> None:
        self.world.record("open", unique_id=self.board.unique_id)
        if self.board.connect_fails:
            raise exceptions.ProbeError(self.board.connect_fails)
        self.board.sessions_opened += 1
        self.is_open = True
        self._target = FakeTarget(self.world, self.board)

    def close(self) -> None:
        self.world.record("close", unique_id=self.board.unique_id)
        self.is_open = False

    @property
    def target(self) -> FakeTarget | None:
        return self._target


class FakeTarget:
    def __init__(self, world: FakePyocd, board: FakeBoard) -> None:
        self.world = world
        self.board = board

    def read_memory_block8(self, addr: int, size: int) -> list[int]:
        self.world.record("read_memory_block8", addr=addr, size=size)
        b = self.board
        start = addr - b.flash_base
        if 0 <= start < b.flash_size:
            assert start + size <= b.flash_size, "read past the end of flash"
            return list(b.flash[start : start + size])
        assert addr >= 0x20000000, "read outside flash and RAM"
        return [b.ram.get(addr + i, 0) for i in range(size)]

    def reset(self) -> None:
        self.world.record("reset", unique_id=self.board.unique_id)
        self.board.resets += 1
        if self.board.on_reset is not None:
            self.board.on_reset(self.board)


def _file_programmer(world: FakePyocd) -> Callable[..., Any]:
    class FileProgrammer:
        def __init__(self, session: FakeSession, progress: Any = None, **kwargs: Any) -> None:
            assert session.is_open, "FileProgrammer needs an open session"
            self.session = session
            self.progress = progress

        def program(
            self, path: str, file_format: str | None = None, base_address: int | None = None
        ) -> None:
            world.record("program", path=path, file_format=file_format, base_address=base_address)
            b = self.session.board
            data = Path(path).read_bytes()
            base = b.flash_base if base_address is None else base_address
            start = base - b.flash_base
            for i, byte in enumerate(data):
                address = base + i
                if b.program_fails_at is not None and address >= b.program_fails_at:
                    raise exceptions.FlashFailure(
                        "flash program page failure", address=b.program_fails_at
                    )
                b.flash[start + i] = byte ^ 0x10 if address == b.corrupt_at else byte
            if self.progress is not None:
                self.progress(1.0)

    return FileProgrammer


def _world_from_env() -> FakePyocd:
    world_file = os.environ.get("NMCM_FAKE_PYOCD_WORLD")
    log = os.environ.get("NMCM_FAKE_PYOCD_LOG")
    boards = []
    if world_file:
        for item in json.loads(Path(world_file).read_text())["boards"]:
            boards.append(FakeBoard(**item))
    return FakePyocd(boards, Path(log) if log else None)


# The module itself is the API when imported through $NMCM_PYOCD_FAKE.
_WORLD = _world_from_env()
ConnectHelper = _WORLD.ConnectHelper
FileProgrammer = _WORLD.FileProgrammer
