"""The boundary with pyOCD: the only module that imports it, lazily, and the only place tests fake.

pyOCD's defaults are wrong for unattended use (docs: FACTS.md, pyOCD section), so every call here
passes the safe value explicitly:

- probes are chosen by their **full** unique ID (pyOCD matches substrings; a partial UID could
  flash the wrong board the day another probe is plugged in) and always with ``blocking=False``
  (the default waits forever for a probe, or prompts on stdin when several match);
- the target comes from a CMSIS pack **file** (``pack`` option), never from a download;
- the connection is made ``under-reset`` at a moderate SWD clock, which users report as the
  stable choice for these parts;
- ``FileProgrammer.program`` neither verifies nor resets: the flash is read back and compared,
  then the target is reset.

pyOCD prints its probe chooser's messages on stdout; every call runs with stdout sent to stderr
so that ``-o json`` output stays clean.

Seam for tests: ``_api`` (set it, or name a module in ``$NMCM_PYOCD_FAKE``) replaces pyOCD's
``ConnectHelper``, ``FileProgrammer`` and ``exceptions`` — nothing else is faked.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from nmcm_deploy.errors import DeployError
from nmcm_deploy.flash.errors import (
    FlashAlgoFailed,
    FlashError,
    PackMissing,
    ProbeAmbiguous,
    ProbeNotFound,
    PyocdMissing,
    TargetConnectFailed,
    VerifyMismatch,
)

FAKE_ENV = "NMCM_PYOCD_FAKE"
DEFAULT_FREQUENCY = 4_000_000  # Hz; SWD at 4 MHz under reset is what users report as stable
DEFAULT_CONNECT_MODE = "under-reset"
FLASH_BASE = 0x08000000  # both reference MCUs boot from flash bank 1 at this address
VERIFY_CHUNK = 32 * 1024  # bytes read back per call

# The seam: None until first use; then pyOCD's (or the fake's) entry points.
_api: Any = None


def api() -> Any:
    """pyOCD's ``ConnectHelper``, ``FileProgrammer`` and ``exceptions``, imported on first use."""
    global _api
    if _api is None:
        fake = os.environ.get(FAKE_ENV)
        if fake:
            _api = importlib.import_module(fake)
        else:
            try:
                from pyocd.core import exceptions
                from pyocd.core.helpers import ConnectHelper
                from pyocd.flash.file_programmer import FileProgrammer
            except ImportError:
                raise PyocdMissing() from None
            _api = SimpleNamespace(
                ConnectHelper=ConnectHelper, FileProgrammer=FileProgrammer, exceptions=exceptions
            )
    return _api


def available() -> bool:
    try:
        api()
    except PyocdMissing:
        return False
    return True


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    with contextlib.redirect_stdout(sys.stderr):
        yield


# --- listing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbeInfo:
    unique_id: str
    vendor: str
    product: str
    description: str
    target: str | None  # the MCU of the board pyOCD recognises behind the probe, if any

    def as_dict(self) -> dict[str, str | None]:
        return {
            "unique_id": self.unique_id,
            "vendor": self.vendor,
            "product": self.product,
            "description": self.description,
            "target": self.target,
        }


def _attr(obj: Any, name: str) -> Any:
    # A probe's properties may talk to USB; one that fails must not hide the others.
    try:
        return getattr(obj, name)
    except Exception:
        return None


def _probe_info(probe: Any) -> ProbeInfo:
    board = _attr(probe, "associated_board_info")
    target = _attr(board, "target") if board is not None else None
    return ProbeInfo(
        unique_id=str(probe.unique_id),
        vendor=str(_attr(probe, "vendor_name") or ""),
        product=str(_attr(probe, "product_name") or ""),
        description=str(_attr(probe, "description") or ""),
        target=str(target).lower() if target else None,
    )


def _connected(unique_id: str | None = None) -> list[Any]:
    pyocd = api()
    try:
        with _quiet_stdout():
            probes = pyocd.ConnectHelper.get_all_connected_probes(
                blocking=False, unique_id=unique_id
            )
    except (pyocd.exceptions.Error, OSError) as exc:
        raise DeployError(f"listing the debug probes failed: {_pyocd_error(exc)}") from None
    return list(probes or [])


def list_probes() -> list[ProbeInfo]:
    """Every connected debug probe, sorted by unique ID; never waits for one."""
    return sorted((_probe_info(p) for p in _connected()), key=lambda p: p.unique_id)


def _bare_uid(uid: str) -> str:
    # pyOCD accepts "stlink:UID"; the part after the type is what probes report.
    return uid.split(":", 1)[1] if ":" in uid else uid


def choose_probe(node: str, uid: str | None) -> str:
    """The full unique ID of the node's probe, or ProbeNotFound / ProbeAmbiguous. Without a
    UID (a single-node manifest may omit it) the only connected probe is taken."""
    if uid is None:
        probes = list_probes()
        if len(probes) == 1:
            return probes[0].unique_id
        if not probes:
            raise ProbeNotFound(node, "no debug probe connected", hint="run `nmcm probes`")
        raise ProbeAmbiguous(
            node,
            f"{len(probes)} probes are connected and the node has no probe.uid",
            hint="set probe.uid to one of: " + ", ".join(p.unique_id for p in probes),
        )
    want = _bare_uid(uid).lower()
    matches = [_probe_info(p) for p in _connected(uid)]
    exact = [p for p in matches if p.unique_id.lower() == want]
    if len(exact) == 1:
        return exact[0].unique_id  # as the probe reports it (pyOCD's exact match is by case)
    if not matches:
        others = [p.unique_id for p in list_probes()]
        raise ProbeNotFound(
            node,
            f"probe {uid} not found",
            hint="connected probes: "
            + (", ".join(others) if others else "none")
            + " (`nmcm probes`)",
        )
    if len(matches) > 1 or exact:
        raise ProbeAmbiguous(
            node,
            f"probe UID {uid} is ambiguous: it matches "
            + ", ".join(sorted(p.unique_id for p in matches)),
            hint="write the probe's full unique ID as `nmcm probes` lists it",
        )
    raise ProbeAmbiguous(
        node,
        f"probe UID {uid} is only part of probe {matches[0].unique_id}'s unique ID",
        hint=f'write the full unique ID: uid: "{matches[0].unique_id}"',
    )


# --- flashing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlashRequest:
    """Everything needed to put one node's image on its board."""

    node: str
    uid: str | None  # None: the only connected probe
    target: str  # pyOCD target name, from the MCU profile
    pack: Path
    image: Path  # raw binary, programmed at base_address
    base_address: int = FLASH_BASE
    frequency: int = DEFAULT_FREQUENCY
    connect_mode: str = DEFAULT_CONNECT_MODE

    def session_options(self) -> dict[str, Any]:
        return {
            "pack": [str(self.pack)],
            "target_override": self.target,
            "frequency": self.frequency,
            "connect_mode": self.connect_mode,
            "hide_programming_progress": True,
        }


@dataclass(frozen=True)
class FlashResult:
    node: str
    uid: str
    bytes_written: int
    seconds: float


def _first_difference(expected: bytes, found: bytes) -> int:
    for i, (a, b) in enumerate(zip(expected, found, strict=False)):
        if a != b:
            return i
    return min(len(expected), len(found))


def verify(node: str, target: Any, data: bytes, base: int) -> None:
    """Read the flash back in chunks and compare it with the image; VerifyMismatch names the
    first address that differs."""
    for offset in range(0, len(data), VERIFY_CHUNK):
        want = data[offset : offset + VERIFY_CHUNK]
        got = bytes(target.read_memory_block8(base + offset, len(want)))
        if got != want:
            i = _first_difference(want, got)
            found = got[i] if i < len(got) else None
            raise VerifyMismatch(node, base + offset + i, want[i], found)


def _pyocd_error(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def flash(
    request: FlashRequest,
    step: Callable[[str], None] | None = None,
    progress: Callable[[float], None] | None = None,
    after_reset: Callable[[Any], None] | None = None,
) -> FlashResult:
    """Connect to the node's probe, program the image, verify it by reading back, reset; then
    ``after_reset(target)`` while the session is still open (reading what the image leaves in
    RAM: the board calibration).

    Raises a FlashError subclass naming the node; ``flash_touched`` on it says whether the board's
    flash may have changed (connecting does not; erasing and programming do)."""
    say = step or (lambda _message: None)
    started = time.monotonic()
    if not request.pack.is_file():  # checked before, but a probe must never see a missing pack
        raise PackMissing(request.node, f"pack {request.pack} does not exist")
    if not request.image.is_file():
        raise FlashError(request.node, f"image {request.image} does not exist")
    data = request.image.read_bytes()
    pyocd = api()
    uid = choose_probe(request.node, request.uid)
    say(
        f"connecting to {request.target} through probe {uid} ({request.connect_mode}, "
        f"{request.frequency / 1e6:g} MHz)"
    )
    # pyOCD reads the pack and creates the target when it makes the session, and talks to the
    # MCU when the session opens: both can fail on the pack, or on the probe and the board.
    with _connect_errors(request, uid), _quiet_stdout():
        session = pyocd.ConnectHelper.session_with_chosen_probe(
            unique_id=uid, blocking=False, options=request.session_options()
        )
    if session is None:
        raise ProbeNotFound(
            request.node,
            f"probe {uid} not found or ambiguous (was it unplugged?)",
            hint="run `nmcm probes`",
        )
    errors = pyocd.exceptions
    try:
        with _connect_errors(request, uid), _quiet_stdout():
            session.open()
        target = session.target
        if target is None:
            raise TargetConnectFailed(request.node, f"probe {uid} has no target after connecting")

        say(f"programming {len(data)} bytes at 0x{request.base_address:08x}")
        try:
            with _quiet_stdout():
                programmer = pyocd.FileProgrammer(session, progress=progress)
                programmer.program(
                    str(request.image), file_format="bin", base_address=request.base_address
                )
        except errors.FlashFailure as exc:
            raise _touched(
                FlashAlgoFailed(
                    request.node,
                    f"flash algorithm failed: {_pyocd_error(exc)}",
                    hint="a pack whose flash algorithm does not match the part (users report "
                    "wrong sector sizes in H7A3 packs); docs/bring-up.md",
                )
            ) from None
        except (errors.Error, OSError) as exc:
            raise _touched(
                FlashAlgoFailed(request.node, f"programming failed: {_pyocd_error(exc)}")
            ) from None

        say("verifying by reading the flash back")
        try:
            with _quiet_stdout():
                verify(request.node, target, data, request.base_address)
        except VerifyMismatch as exc:
            raise _touched(exc) from None
        except (errors.Error, OSError) as exc:
            raise _touched(
                FlashError(request.node, f"reading the flash back failed: {_pyocd_error(exc)}")
            ) from None

        say("resetting")
        try:
            with _quiet_stdout():
                target.reset()
        except (errors.Error, OSError) as exc:
            raise _touched(
                FlashError(request.node, f"reset after flashing failed: {_pyocd_error(exc)}")
            ) from None
        if after_reset is not None:
            try:
                after_reset(target)
            except (errors.Error, OSError) as exc:
                raise _touched(
                    FlashError(request.node, f"reading the board failed: {_pyocd_error(exc)}")
                ) from None
    finally:
        with contextlib.suppress(Exception), _quiet_stdout():
            session.close()
    return FlashResult(request.node, uid, len(data), time.monotonic() - started)


@contextlib.contextmanager
def _connect_errors(request: FlashRequest, uid: str) -> Iterator[None]:
    """pyOCD's errors while making and opening a session, as errors naming the node."""
    errors = api().exceptions
    try:
        yield
    except errors.TargetSupportError as exc:
        raise TargetConnectFailed(
            request.node,
            f"pyOCD does not know target {request.target} with pack {request.pack.name}: "
            f"{_pyocd_error(exc)}",
            hint="the pack must be the MCU's Device Family Pack: `pyocd list --targets --pack "
            "FILE` lists what a pack provides; docs/bring-up.md",
        ) from None
    except (errors.Error, OSError) as exc:
        raise TargetConnectFailed(
            request.node,
            f"cannot connect to {request.target} through probe {uid}: {_pyocd_error(exc)}",
            hint="check the board's power and the ST-LINK jumpers; docs/bring-up.md",
        ) from None


def _touched(exc: FlashError) -> FlashError:
    exc.flash_touched = True
    return exc
