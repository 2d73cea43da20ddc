"""Instructions of the layer kernels that ship, measured under QEMU: the data the cost model is
fitted to (issue 10).

A *suite* is a list of models, each compiled into one stage blob that holds the whole model
(stage 0 of 1) with deterministic starting weights, together with the micro-batch (which is the
whole batch), the loss and the optimizer settings of one training step on it. ``write_suite``
writes the suite file (format: firmware/apps/calibrate-qemu/README.md) and, beside it, the
header the image is built with (``nmcm_calibration.h``: the arena, the largest of the suite).

``measure`` writes the suite, builds the calibration image (firmware/apps/calibrate-qemu) for a
core with CMake and the toolchain file, runs it once under ``qemu-system-arm -icount shift=0`` on
QEMU's MPS2 board of that core (``mps2-an386`` for the Cortex-M4, ``mps2-an500`` for the
Cortex-M7: the MCU profiles' ``qemu_machine``) and returns, for every entry, the instructions of
each layer's forward and backward, of the loss and of the optimizer step. The image times them
with the QEMU node's own stopwatch (firmware/apps/node-qemu/stage_stopwatch.h) and runs the step
as a node runs a batch of one micro-batch, so its figures are those a QEMU node logs.

The image is content-addressed like a node's (build/arm.py): ``<state>/cache/calibrate/<key>/``
holds the suite it was built from, its header, the ELF and the build log, and a suite, firmware
source and compiler that have not changed are not built again. The libraries are compiled once
per core in a shared build tree (``<state>/cache/arm-build/``), locked while a build uses it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from nmcm_deploy.build.arm import (
    ARM_GCC,
    QEMU_FLASH,
    QEMU_SRAM,
    build_tree,
    configure_and_build,
    require_tools,
)
from nmcm_deploy.build.arm import cache_dir as build_cache_dir
from nmcm_deploy.build.elfsize import ElfSizes, elf_sizes, symbol_addresses
from nmcm_deploy.build.elfsize import measure as measure_elf
from nmcm_deploy.build.sources import compiler_id, firmware_dir, source_digest
from nmcm_deploy.build.steps import build_lock
from nmcm_deploy.compiler.fit import keeps_momentum
from nmcm_deploy.compiler.ir import Layer, ModelIR, numel
from nmcm_deploy.compiler.memory import plan_stage
from nmcm_deploy.errors import BuildError, DeployError, ModelError
from nmcm_deploy.files import atomic_write
from nmcm_deploy.profiles import mcu, mcu_names
from nmcm_deploy.protocol import LossKind
from nmcm_deploy.targets.qemu import QEMU, emulator

if TYPE_CHECKING:
    from nmcm_deploy.flash.pyocd_session import FlashRequest

CORES = ("cortex-m4", "cortex-m7")
APP = "calibrate-qemu"
TARGET = "nmcm-calibrate-qemu"  # the CMake target and the image's file name
BOARD = "qemu-mps2"
BOARD_APP = "calibrate-board"  # the same program on a Nucleo board, timed in DWT cycles
BOARD_TARGET = "nmcm-calibrate-board"
# What the image keeps in RAM for a debug probe (firmware/apps/calibrate-qemu/main_calibrate.cpp)
LOG_SYMBOL = "nmcm_calibration_log"
LOG_USED_SYMBOL = "nmcm_calibration_log_used"
STATE_SYMBOL = "nmcm_calibration_state"
LOG_BYTES = 16384  # NMCM_CALIBRATION_LOG_BYTES
STATES = {0x52554E31: "running", 0x454E4F44: "done", 0x4C494146: "failed", 0x4C465653: "overflow"}
SUITE_NAME = "calibration.suite"
HEADER_NAME = "nmcm_calibration.h"  # beside the suite: what the image's build needs of it
DEFAULT_TIMEOUT_S = 600.0

# The suite format, version 1 (firmware/apps/calibrate-qemu/README.md).
MAGIC = b"NMCS"
FORMAT_VERSION = 1
# Header: magic, version, header size, total size, entry count, entry size, arena, 12 reserved.
HEADER = struct.Struct("<4sHHIHHI12x")
# Entry: blob offset, blob size, samples, loss, reserved, lr, momentum, weight decay, data seed,
# reserved.
ENTRY = struct.Struct("<IIHBBfffII")
CRC = struct.Struct("<I")
BLOB_ALIGN = 16
MAX_ENTRIES = 1024
MAX_SAMPLES = 0xFFFF
assert HEADER.size == 32 and ENTRY.size == 32

# What the image may take of QEMU's 4 MB memories beside the stack, .data and .bss, and its code.
MAX_ARENA = QEMU_SRAM[0].size - (256 << 10)
MAX_SUITE = QEMU_FLASH[0].size - (256 << 10)

LOSSES = {"cross_entropy": LossKind.CROSS_ENTROPY, "mse": LossKind.MSE}

# One entry's figures (firmware/apps/calibrate-qemu/main_calibrate.cpp).
_LINE = re.compile(
    r"^calibrate entry=(\d+) samples=(\d+) forward=([\d,]*) backward=([\d,]*) loss=(\d+) "
    r"step=(\d+)\s*$"
)
_DONE = "calibrate done"


class CalibrationError(DeployError):
    """The calibration image did not measure its suite: QEMU ended with a non-zero status (a
    `fatal:` line: the suite or a blob refused, a step the executor refused), ran out of time, or
    logged other figures than the suite asks for. Carries QEMU's status and whole log."""

    def __init__(self, message: str, *, returncode: int | None, log: str) -> None:
        super().__init__(message)
        self.returncode = returncode
        self.log = log


@dataclass(frozen=True)
class SuiteEntry:
    """One model to measure, and the training step to measure on it: ``samples`` in one
    micro-batch that is the whole batch, the loss and SGD's settings. ``seed`` sets the starting
    weights exactly as a manifest's ``spec.model.seed`` sets an inline model's, and the inputs
    and labels (``entry_data``)."""

    ir: ModelIR
    samples: int
    lr: float = 0.05
    momentum: float = 0.0  # > 0: the stage is planned with momentum buffers, as a node's is
    weight_decay: float = 0.0
    loss: str = "cross_entropy"  # | "mse"
    seed: int = 0


@dataclass(frozen=True)
class SuiteFiles:
    """A written suite: the file, the header beside it, and what the image needs."""

    suite: Path
    header: Path
    entries: int
    size: int  # bytes of the suite file
    arena_bytes: int  # the largest arena of its entries: the image's static arena


@dataclass(frozen=True)
class CalibrationImage:
    key: str
    core: str
    machine: str  # QEMU's board (mps2-an386 | mps2-an500), or the MCU of a board image
    elf: Path  # a board image's .bin is beside it
    sizes: ElfSizes
    rebuilt: bool  # False: it came from the cache


@dataclass(frozen=True)
class EntryCounts:
    """One ``calibrate`` line of the image's log: what it measured for entry ``index``."""

    index: int
    samples: int
    forward: tuple[int, ...]
    backward: tuple[int, ...]
    loss: int
    step: int


@dataclass(frozen=True)
class ImageRun:
    """One run of a calibration image: its figures, entry by entry, and QEMU's whole log."""

    counts: tuple[EntryCounts, ...]
    log: str


@dataclass(frozen=True)
class LayerInstructions:
    """Instructions of one layer in one training step: forward and backward over the step's
    samples. Multiples of 40 (the stopwatch's resolution); a backward that does not run (a
    softmax fused into cross-entropy, a flatten at the start of the model) is 0."""

    index: int
    layer: Layer
    forward: int
    backward: int


@dataclass(frozen=True)
class EntryInstructions:
    """Instructions of one entry's training step, per layer, plus the loss (and its gradient
    seed) and the optimizer step over every tensor."""

    entry: SuiteEntry
    layers: tuple[LayerInstructions, ...]
    loss: int
    step: int

    @property
    def samples(self) -> int:
        return self.entry.samples

    @property
    def forward(self) -> tuple[int, ...]:
        return tuple(layer.forward for layer in self.layers)

    @property
    def backward(self) -> tuple[int, ...]:
        return tuple(layer.backward for layer in self.layers)

    @property
    def per_step(self) -> int:
        return sum(self.forward) + sum(self.backward) + self.loss + self.step


@dataclass(frozen=True)
class Calibration:
    """One suite measured on one core."""

    core: str
    image: CalibrationImage
    entries: tuple[EntryInstructions, ...]


# --- the suite -----------------------------------------------------------------------------------


def qemu_machine(core: str) -> str:
    """QEMU's board for ``core``: the ``qemu_machine`` of the MCU profiles of that core."""
    machines = {mcu(name).core: mcu(name).qemu_machine for name in mcu_names()}
    if core not in machines:
        raise BuildError(f"no QEMU board for core {core!r}; cores: {', '.join(sorted(machines))}")
    return machines[core]


def data_seed(seed: int) -> int:
    """The xorshift32 state an entry's inputs and labels start from (never 0)."""
    return ((seed ^ 0x9E3779B9) & 0xFFFFFFFF) or 1


def entry_data(entry: SuiteEntry) -> tuple[np.ndarray, np.ndarray]:
    """The inputs ``[samples, *input_shape]`` (float32) and labels ``[samples]`` (int64) the
    image trains ``entry``'s step on, as its xorshift32 makes them (main_calibrate.cpp): every
    input value, sample by sample, uniform on [-1, 1) in steps of 2^-23 (exact in float32), then
    every label, a class id below the model's outputs."""
    state = data_seed(entry.seed)

    def next_word() -> int:
        nonlocal state
        state ^= (state << 13) & 0xFFFFFFFF
        state ^= state >> 17
        state ^= (state << 5) & 0xFFFFFFFF
        return state

    count = entry.samples * numel(entry.ir.input_shape)
    words = np.array([next_word() >> 8 for _ in range(count)], dtype=np.float64)
    x = (words * 2.0**-23 - 1.0).astype(np.float32).reshape(entry.samples, *entry.ir.input_shape)
    classes = numel(entry.ir.output_shape)
    y = np.array([next_word() % classes for _ in range(entry.samples)], dtype=np.int64)
    return x, y


def _check_entry(entry: SuiteEntry, where: str) -> None:
    ir = entry.ir
    if not ir.layers:
        raise ModelError("the model has no layers", where=where)
    if len(ir.output_shape) != 1:
        raise ModelError(
            f"the model's output is shaped {list(ir.output_shape)}; the loss needs features",
            where=where,
            hint="end the model in flatten, linear or softmax",
        )
    if not 1 <= entry.samples <= MAX_SAMPLES:
        raise ModelError(f"samples is {entry.samples}, not in 1..{MAX_SAMPLES}", where=where)
    if entry.loss not in LOSSES:
        raise ModelError(f"loss {entry.loss!r} is not one of {', '.join(LOSSES)}", where=where)
    settings = (entry.lr, entry.momentum, entry.weight_decay)
    if not all(np.isfinite(np.float32(v)) for v in settings) or entry.momentum < 0:
        raise ModelError(
            f"lr {entry.lr}, momentum {entry.momentum}, weight decay {entry.weight_decay}: each "
            "must be finite in float32, and momentum at least 0",
            where=where,
        )


def _indexed_names(ir: ModelIR) -> ModelIR:
    """The IR with the parameter names of its inline module (``<layer>.weight``, ``.bias``),
    as ``inline_ir`` gives them, whatever front end the IR came from."""
    layers = []
    for i, layer in enumerate(ir.layers):
        names = {}
        if layer.weight_shape is not None:
            names["weight"] = f"{i}.weight"
        if layer.bias_shape is not None:
            names["bias"] = f"{i}.bias"
        layers.append(replace(layer, param_names=names))
    return ModelIR(ir.input_shape, tuple(layers))


def entry_blob(entry: SuiteEntry) -> tuple[bytes, int]:
    """The entry's model as one stage blob (stage 0 of 1) and its arena's bytes. The memory plan
    is a single-node cluster's for a batch of ``samples`` in one micro-batch (compiler/fit.py:
    micro-batch = batch, one slot; momentum buffers when momentum > 0); the weights are the
    inline module's for ``seed`` (compiler/frontend.py), as a manifest's inline model gets them."""
    from nmcm_deploy.compiler.blob import write_blob
    from nmcm_deploy.compiler.frontend import inline_module, stage_weights

    ir = _indexed_names(entry.ir)
    count = len(ir.layers)
    plan = plan_stage(
        ir,
        0,
        count - 1,
        micro_batch=entry.samples,
        slots=1,
        momentum=keeps_momentum(entry.momentum),
        stage_index=0,
        stage_count=1,
    )
    weights = stage_weights(inline_module(ir, entry.seed).state_dict(), ir.layers, plan.tensors)
    blob = write_blob(ir.layers, tuple(range(count)), plan, weights, ir.model_hash())
    return blob, plan.arena_bytes


def _align(n: int) -> int:
    return (n + BLOB_ALIGN - 1) // BLOB_ALIGN * BLOB_ALIGN


def suite_bytes(entries: Sequence[SuiteEntry]) -> tuple[bytes, int]:
    """The suite file's bytes and the largest arena of its entries (ModelError for an entry
    the image cannot run, naming it as ``entries[i]``)."""
    if not 1 <= len(entries) <= MAX_ENTRIES:
        raise ModelError(f"a suite holds 1 to {MAX_ENTRIES} entries, not {len(entries)}")
    blobs = []
    arena = 0
    for i, entry in enumerate(entries):
        where = f"entries[{i}]"
        _check_entry(entry, where)
        blob, entry_arena = entry_blob(entry)
        if entry_arena > MAX_ARENA:
            raise ModelError(
                f"its arena of {entry_arena} bytes does not fit QEMU's RAM ({MAX_ARENA} bytes "
                "for the arena)",
                where=where,
                hint="fewer samples or a smaller model",
            )
        blobs.append(blob)
        arena = max(arena, entry_arena)
    table = bytearray()
    body = bytearray()
    offset = HEADER.size + ENTRY.size * len(entries)
    for entry, blob in zip(entries, blobs, strict=True):
        offset = _align(offset)
        table += ENTRY.pack(
            offset,
            len(blob),
            entry.samples,
            int(LOSSES[entry.loss]),
            0,
            entry.lr,
            entry.momentum,
            entry.weight_decay,
            data_seed(entry.seed),
            0,
        )
        body += bytes(offset - HEADER.size - ENTRY.size * len(entries) - len(body)) + blob
        offset += len(blob)
    total = HEADER.size + len(table) + len(body) + CRC.size
    if total > MAX_SUITE:
        raise ModelError(
            f"the suite is {total} bytes; the image holds at most {MAX_SUITE}",
            hint="split the entries over several suites",
        )
    head = HEADER.pack(MAGIC, FORMAT_VERSION, HEADER.size, total, len(entries), ENTRY.size, arena)
    data = head + table + body
    return bytes(data) + CRC.pack(zlib.crc32(data) & 0xFFFFFFFF), arena


def suite_header(suite: bytes, arena_bytes: int) -> str:
    """``nmcm_calibration.h`` for a suite: the constants its image is built with."""
    digest = hashlib.sha256(suite).hexdigest()
    return (
        "// Generated by nmcm (nmcm_deploy/costs/measure.py) with the calibration suite beside it\n"
        f"// ({len(suite)} bytes, sha256 {digest[:16]}...): the build constants of the image that\n"
        "// measures it (firmware/apps/calibrate-qemu). Do not edit.\n"
        "#pragma once\n\n"
        "#include <cstdint>\n\n"
        "namespace nmcm::generated {\n\n"
        "// The largest arena of the suite's entries: the image's static arena.\n"
        f"constexpr std::uint32_t kCalibrationArenaSize = {arena_bytes};\n\n"
        "}  // namespace nmcm::generated\n"
    )


def write_suite(entries: Sequence[SuiteEntry], path: Path) -> SuiteFiles:
    """Write the suite of ``entries`` to ``path`` and its header (``nmcm_calibration.h``) beside
    it, each whole or not at all."""
    data, arena = suite_bytes(entries)
    header = path.with_name(HEADER_NAME)
    atomic_write(path, data)
    atomic_write(header, suite_header(data, arena).encode())
    return SuiteFiles(path, header, len(entries), len(data), arena)


# --- the image -----------------------------------------------------------------------------------


def calibration_key(
    suite: bytes, header: bytes, machine: str, board: str = BOARD, app: str = APP
) -> str:
    """The build key of a calibration image: everything it is built from."""
    parts = [
        app,
        source_digest(firmware_dir()),
        hashlib.sha256(suite).hexdigest(),
        hashlib.sha256(header).hexdigest(),
        machine,
        board,
        compiler_id(ARM_GCC),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _sizes(elf: Path, machine: str) -> ElfSizes:
    """A QEMU image against QEMU's memories; a board image against its MCU's."""
    if machine in mcu_names():
        return elf_sizes(elf, mcu(machine))
    return measure_elf(
        elf,
        flash_regions=QEMU_FLASH,
        sram_regions=QEMU_SRAM,
        flash_capacity=QEMU_FLASH[0].size,
        sram_region=QEMU_SRAM[0].name,
        sram_capacity=QEMU_SRAM[0].size,
    )


def _image(key: str, core: str, machine: str, elf: Path, *, rebuilt: bool) -> CalibrationImage:
    return CalibrationImage(key, core, machine, elf, _sizes(elf, machine), rebuilt)


def build_image(suite: Path, core: str) -> CalibrationImage:
    """The calibration image of the suite file ``suite`` (its ``nmcm_calibration.h`` beside it)
    for ``core`` under QEMU, built into the cache unless it is there already. The suite goes in
    as it is: a corrupt one builds, and the image refuses it when it runs."""
    return _build(suite, core, qemu_machine(core), BOARD, APP, TARGET)


def build_board_image(suite: Path, mcu_name: str, board: str) -> CalibrationImage:
    """The board calibration image (firmware/apps/calibrate-board: the same program, timed in
    DWT cycles) of ``suite`` for ``mcu_name`` on ``board``, with its .bin beside the ELF; the
    image's ``machine`` is the MCU."""
    return _build(suite, mcu(mcu_name).core, mcu_name, board, BOARD_APP, BOARD_TARGET)


def _build(
    suite: Path, core: str, machine: str, board: str, app: str, target: str
) -> CalibrationImage:
    try:
        suite_data = suite.read_bytes()
        header_data = suite.with_name(HEADER_NAME).read_bytes()
    except OSError as exc:
        raise BuildError(f"cannot read the calibration suite: {exc}") from None
    key = calibration_key(suite_data, header_data, machine, board, app)
    out = build_cache_dir() / "calibrate" / key[:24]
    elf = out / f"{target}.elf"
    if elf.is_file():
        return _image(key, core, machine, elf, rebuilt=False)

    require_tools()
    tree = build_tree(machine, board, {}, app)
    with build_lock(tree) as lock:
        if elf.is_file():  # built by another process while this one waited
            return _image(key, core, machine, elf, rebuilt=False)
        # The image's inputs stay with it: the folder says what was measured.
        atomic_write(out / SUITE_NAME, suite_data)
        atomic_write(out / HEADER_NAME, header_data)
        log = out / "build.log"
        log.write_text(f"# {app} for {core} ({machine}, {board}) from {suite}\n")
        suite_path = str((out / SUITE_NAME).resolve())
        what = f"the calibration image for {machine}"
        configure_and_build(
            tree, machine, board, {"NMCM_CALIBRATION_SUITE": suite_path}, target, what, log, lock
        )
        built = tree / "apps" / app / target
        # The ELF last: its presence is what makes the cache entry complete.
        for ext in ("map", "bin", "elf"):
            tmp = out / f".{target}.{ext}.{os.getpid()}.tmp"
            shutil.copyfile(built.with_name(f"{target}.{ext}"), tmp)
            tmp.replace(out / f"{target}.{ext}")
    return _image(key, core, machine, elf, rebuilt=True)


def _tail(log: str, lines: int = 15) -> str:
    return "\n".join(log.strip().splitlines()[-lines:])


def _numbers(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",")) if text else ()


def parse_log(log: str) -> tuple[tuple[EntryCounts, ...], bool]:
    """The ``calibrate`` lines of an image's log, and whether it logged ``calibrate done``."""
    found = []
    done = False
    for raw in log.splitlines():
        line = raw.strip()
        done = done or line == _DONE
        m = _LINE.match(line)
        if m is not None:
            found.append(
                EntryCounts(
                    index=int(m.group(1)),
                    samples=int(m.group(2)),
                    forward=_numbers(m.group(3)),
                    backward=_numbers(m.group(4)),
                    loss=int(m.group(5)),
                    step=int(m.group(6)),
                )
            )
    return tuple(found), done


def run_image(image: CalibrationImage, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> ImageRun:
    """Run the image once under ``qemu-system-arm -icount shift=0`` (under ``timeout``) and
    return its figures, entry by entry. CalibrationError, with the log's tail, if QEMU ends
    non-zero or out of time, or the log lacks an entry or the closing ``calibrate done``."""
    if shutil.which(QEMU) is None:
        raise DeployError(f"{QEMU} is not installed", hint="run `make setup` (qemu-system-arm)")
    limit = max(1, int(timeout_s + 0.999))
    cmd = ["timeout", "--kill-after=5", str(limit), *emulator(image.machine, image.elf)]
    try:
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=limit + 30,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:  # `timeout` itself did not end it
        log = (exc.stdout or b"").decode(errors="replace")
        raise CalibrationError(
            f"{QEMU} -M {image.machine} did not end within {limit} s:\n{_tail(log)}",
            returncode=None,
            log=log,
        ) from None
    log = proc.stdout.decode(errors="replace")
    where = f"the calibration image {image.elf} on {QEMU} -M {image.machine}"
    if proc.returncode == 124:
        raise CalibrationError(
            f"{where} did not finish within {limit} s:\n{_tail(log)}",
            returncode=proc.returncode,
            log=log,
        )
    if proc.returncode != 0:
        raise CalibrationError(
            f"{where} exited with status {proc.returncode}:\n{_tail(log)}",
            returncode=proc.returncode,
            log=log,
        )
    counts, done = parse_log(log)
    if not done or [c.index for c in counts] != list(range(len(counts))):
        raise CalibrationError(
            f"{where} ended without measuring every entry of its suite:\n{_tail(log)}",
            returncode=proc.returncode,
            log=log,
        )
    return ImageRun(counts, log)


def _labelled(entry: SuiteEntry, counts: EntryCounts, where: str, log: str) -> EntryInstructions:
    layers = entry.ir.layers
    if (
        counts.samples != entry.samples
        or len(counts.forward) != len(layers)
        or len(counts.backward) != len(layers)
    ):
        raise CalibrationError(
            f"{where}: the image measured {len(counts.forward)} layers of {counts.samples} "
            f"samples, the suite has {len(layers)} of {entry.samples}:\n{_tail(log)}",
            returncode=0,
            log=log,
        )
    return EntryInstructions(
        entry=entry,
        layers=tuple(
            LayerInstructions(i, layer, f, b)
            for i, (layer, f, b) in enumerate(
                zip(layers, counts.forward, counts.backward, strict=True)
            )
        ),
        loss=counts.loss,
        step=counts.step,
    )


def read_board_log(
    target: Any,
    addresses: dict[str, int],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """What a running board calibration image keeps in RAM, read through pyOCD's ``target``
    once its state says it is over: the text of its log. CalibrationError if it failed, its log
    overflowed, or it is still running after ``timeout_s``."""

    def word(name: str) -> int:
        return int.from_bytes(bytes(target.read_memory_block8(addresses[name], 4)), "little")

    deadline = clock() + timeout_s
    state = STATES.get(word(STATE_SYMBOL), "not started")
    while state in ("running", "not started") and clock() < deadline:
        sleep(poll_s)
        state = STATES.get(word(STATE_SYMBOL), "not started")
    used = min(word(LOG_USED_SYMBOL), LOG_BYTES)
    log = bytes(target.read_memory_block8(addresses[LOG_SYMBOL], used)) if used else b""
    text = log.decode(errors="replace")
    if state != "done":
        why = {
            "failed": "stopped on an error",
            "overflow": f"filled its {LOG_BYTES}-byte RAM log",
        }.get(state, f"did not finish within {timeout_s:.0f} s (state: {state})")
        raise CalibrationError(
            f"the board calibration image {why}:\n{_tail(text)}", returncode=None, log=text
        )
    return text


def board_addresses(image: CalibrationImage) -> dict[str, int]:
    """Where the image keeps its RAM log, from its ELF."""
    names = (LOG_SYMBOL, LOG_USED_SYMBOL, STATE_SYMBOL)
    found = symbol_addresses(image.elf, names)
    missing = [n for n in names if n not in found]
    if missing:
        raise BuildError(f"{image.elf} has no symbol {missing[0]}: not a calibration image")
    return found


# What the calibration image takes of a board's SRAM besides the arena and its RAM log, where they
# share a region (the F413; the H7A3 keeps its stack, .data and .bss in DTCM: reserve 0): it
# keeps the board's default stack (16 KiB), which a node image does not (nmcm sizes a node's
# stack from its call graph), so it needs more than the node's reserve.
CALIBRATION_SRAM_RESERVE = 32 * 1024


def board_entries(entries: Sequence[SuiteEntry], mcu_name: str) -> list[SuiteEntry]:
    """The entries whose arena fits ``mcu_name`` beside the image itself (its own reserve and the
    RAM log): a board has far less RAM than QEMU's machines."""
    profile = mcu(mcu_name)
    reserve = profile.runtime_sram_reserve
    if reserve:
        reserve = max(reserve, CALIBRATION_SRAM_RESERVE)
    budget = profile.sram_capacity - reserve - LOG_BYTES
    return [e for e in entries if entry_blob(e)[1] <= budget]


def measure_board(
    entries: Sequence[SuiteEntry],
    mcu_name: str,
    board: str,
    request: Callable[[Path], FlashRequest],
    *,
    step: Callable[[str], None] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Calibration:
    """Measure every entry's training step on a board of ``mcu_name``: write the suite, build its
    board image, flash it through the probe ``request(bin)`` names, let it run and read its RAM
    log back through the probe. The figures are DWT cycles of the board itself."""
    from nmcm_deploy.flash.pyocd_session import flash

    calibrate = build_cache_dir() / "calibrate"
    calibrate.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".suite-", dir=calibrate) as folder:
        files = write_suite(entries, Path(folder) / SUITE_NAME)
        image = build_board_image(files.suite, mcu_name, board)
    if not image.sizes.fits:
        raise BuildError(
            f"the calibration image does not fit {mcu_name}: {image.sizes.shortfall()}"
        )
    addresses = board_addresses(image)
    logs: list[str] = []
    flash(
        request(image.elf.with_suffix(".bin")),
        step=step,
        after_reset=lambda target: logs.append(
            read_board_log(target, addresses, timeout_s=timeout_s)
        ),
    )
    (log,) = logs
    counts, done = parse_log(log)
    if not done or len(counts) != len(entries):
        raise CalibrationError(
            f"the board measured {len(counts)} of {len(entries)} entries:\n{_tail(log)}",
            returncode=None,
            log=log,
        )
    measured = tuple(
        _labelled(entry, c, f"entries[{i}]", log)
        for i, (entry, c) in enumerate(zip(entries, counts, strict=True))
    )
    return Calibration(image.core, image, measured)


def measure(
    entries: Sequence[SuiteEntry],
    core: str,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Calibration:
    """Measure every entry's training step on ``core`` ("cortex-m4" or "cortex-m7"): write the
    suite, build its image (or take it from the cache) and run it once under QEMU. The figures
    are instructions, deterministic under ``-icount shift=0``: the same suite gives the same
    figures on every run."""
    qemu_machine(core)  # an unknown core fails before anything is compiled
    # The suite is written aside first: its content is the build key, which names its folder.
    calibrate = build_cache_dir() / "calibrate"
    calibrate.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".suite-", dir=calibrate) as folder:
        files = write_suite(entries, Path(folder) / SUITE_NAME)
        image = build_image(files.suite, core)
    run = run_image(image, timeout_s=timeout_s)
    if len(run.counts) != len(entries):
        raise CalibrationError(
            f"the calibration image measured {len(run.counts)} entries, the suite has "
            f"{len(entries)}:\n{_tail(run.log)}",
            returncode=0,
            log=run.log,
        )
    measured = tuple(
        _labelled(entry, counts, f"entries[{i}]", run.log)
        for i, (entry, counts) in enumerate(zip(entries, run.counts, strict=True))
    )
    return Calibration(core, image, measured)


__all__ = [
    "CORES",
    "Calibration",
    "CalibrationError",
    "CalibrationImage",
    "EntryCounts",
    "EntryInstructions",
    "ImageRun",
    "LayerInstructions",
    "SuiteEntry",
    "SuiteFiles",
    "build_image",
    "entry_data",
    "measure",
    "run_image",
    "write_suite",
]
