"""Cross builds of node firmware for the ARM targets, with arm-none-eabi-gcc through CMake and the
toolchain file ``firmware/cmake/arm-none-eabi.cmake``; sizes read from the ELF (elfsize.py).

Content-addressed like the sim builds (host.py): a node's image lives in
``<state>/cache/arm/<key>/`` and an unchanged key is never rebuilt. The key covers everything the
image is built from: the firmware sources, the node's generated header and blob, the MCU, board,
W5500 wiring, the application and the compiler.

The libraries (core, net, W5500 driver, runtime, board port) are compiled once per build tree,
one tree per MCU + board + W5500 wiring + sources + compiler (``<state>/cache/arm-build/``). A
node build points that tree at the node's folder (``NMCM_NODE_CONFIG_DIR``) and builds: only the
three per-node units are compiled, then the image is linked and copied into its cache folder. A
lock file serialises builds that share a tree.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nmcm_deploy.build.elfsize import ElfSizes, elf_sizes, measure, symbol_addresses
from nmcm_deploy.build.sources import compiler_id, firmware_dir, source_digest
from nmcm_deploy.build.stack import StackReport, image_stack, report_of, reserve_bytes
from nmcm_deploy.build.steps import build_lock, run_step
from nmcm_deploy.errors import BuildError
from nmcm_deploy.files import atomic_write
from nmcm_deploy.profiles import MemoryRegion
from nmcm_deploy.profiles import mcu as mcu_profile
from nmcm_deploy.reconcile.desired import sha256_hex

if TYPE_CHECKING:
    from nmcm_deploy.compiler.cluster import CompiledStage
    from nmcm_deploy.manifest.model import W5500Spec

ARM_GCC = "arm-none-eabi-gcc"
TOOLCHAIN_FILE = Path("cmake") / "arm-none-eabi.cmake"  # under firmware/
JOBS = os.environ.get("NMCM_BUILD_JOBS", "2")


@dataclass(frozen=True)
class ArmApp:
    """A node firmware application of firmware/arm: its folder and its CMake target."""

    directory: str  # under firmware/
    target: str  # nmcm_add_firmware name: <target>.elf/.bin/.hex/.map


APPS: dict[str, ArmApp] = {
    # The Nucleo boards' node: the runtime over the W5500 (`hardware`).
    "node-board": ArmApp("apps/node-board", "nmcm-node-board"),
    # The QEMU node (`qemu`): the runtime over a UART stream, for mps2-an386/an500. `nmcm build
    # --target qemu` offers it as soon as firmware/apps/node-qemu/CMakeLists.txt exists
    # (app_available) and defines this target with nmcm_add_firmware.
    "node-qemu": ArmApp("apps/node-qemu", "nmcm-node-qemu"),
}

# The app each target builds, and the MCU name the toolchain file is given for an MCU profile.
TARGET_APPS = {"hardware": "node-board", "qemu": "node-qemu"}
QEMU_MCUS = {"stm32f413zh": "mps2-an386", "stm32h7a3zi": "mps2-an500"}

# QEMU's MPS2 boards (firmware/ports/qemu-mps2/memory.ld): code in the first 4 MB, data in the
# second. A QEMU image is measured against these, the memories it runs in; whether a stage fits
# the MCU is what the `hardware` build answers (another linker script, another stack size).
QEMU_FLASH = (MemoryRegion("CODE_RAM", 0x00000000, 4 << 20),)
QEMU_SRAM = (MemoryRegion("DATA_RAM", 0x20000000, 4 << 20),)


@dataclass(frozen=True)
class ArmImage:
    key: str
    app: str
    mcu: str  # NMCM_MCU: stm32f413zh | stm32h7a3zi | mps2-an386 | mps2-an500
    board: str
    elf: Path
    bin: Path
    hex: Path
    map: Path
    sizes: ElfSizes
    rebuilt: bool  # False: the image came from the cache
    stack: StackReport | None = None  # the worst stack depth (stack.json beside the ELF)

    def stack_dict(self) -> dict[str, object] | None:
        """The stack report with the bytes the image reserves for its stack (``.stack`` in the
        linker script: __stack_start__ to __stack_end__) and the margin left."""
        if self.stack is None:
            return None
        reserved = _reserved_stack(self.elf)
        return {
            **self.stack.as_dict(),
            "reserved_bytes": reserved,
            "margin_bytes": reserved - self.stack.worst_bytes,
        }


def app_available(app: str) -> bool:
    """The application exists in this firmware tree (the QEMU node may not yet)."""
    spec = APPS.get(app)
    return spec is not None and (firmware_dir() / spec.directory / "CMakeLists.txt").is_file()


def w5500_overrides(w5500: W5500Spec | None) -> dict[str, str]:
    """The node's W5500 wiring overrides as the ARM build's cache variables (firmware/arm)."""
    if w5500 is None:
        return {}
    values = {
        "NMCM_W5500_SPI": w5500.spi,
        "NMCM_W5500_CS": w5500.cs,
        "NMCM_W5500_RESET": w5500.reset,
    }
    return {k: v for k, v in values.items() if v}


def default_board(mcu_name: str) -> str:
    """The board port for NMCM_MCU ``mcu_name``: the board profile carrying that MCU, else QEMU's
    (mps2-an386/an500)."""
    from nmcm_deploy.profiles import board, board_names

    return next((b for b in board_names() if board(b).mcu == mcu_name), "qemu-mps2")


def arm_key(
    *,
    header: str,
    blob_sha256: str,
    mcu_name: str,
    board: str,
    app: str,
    overrides: Mapping[str, str],
) -> str:
    """The build key of one ARM node image."""
    parts = [
        "arm",
        source_digest(firmware_dir()),
        sha256_hex(header.encode()),
        blob_sha256,
        mcu_name,
        board,
        app,
        ",".join(f"{k}={v}" for k, v in sorted(overrides.items())),
        compiler_id(ARM_GCC),
    ]
    return sha256_hex("\n".join(parts).encode())


def target_mcu(profile_mcu: str, target: str) -> str:
    """NMCM_MCU for a node of MCU ``profile_mcu`` on ``target`` (QEMU stands in for the MCU)."""
    return QEMU_MCUS[profile_mcu] if target == "qemu" else profile_mcu


def stage_key(stage: CompiledStage, target: str, app: str | None = None) -> str:
    """The build key of a compiled stage's image on an ARM target (`hardware`, `qemu`)."""
    node = stage.plan.node
    mcu_name = target_mcu(node.mcu, target)
    return arm_key(
        header=stage.header,
        blob_sha256=stage.blob_sha256,
        mcu_name=mcu_name,
        board=(node.board or default_board(node.mcu)) if target == "hardware" else "qemu-mps2",
        app=app or TARGET_APPS.get(target, ""),
        overrides=w5500_overrides(node.w5500) if target == "hardware" else {},
    )


def cache_dir() -> Path:
    from nmcm_deploy.reconcile.state import state_root

    return state_root() / "cache"


def _sizes(elf: Path, mcu_name: str) -> ElfSizes:
    if mcu_name in QEMU_MCUS.values():
        return measure(
            elf,
            flash_regions=QEMU_FLASH,
            sram_regions=QEMU_SRAM,
            flash_capacity=QEMU_FLASH[0].size,
            sram_region=QEMU_SRAM[0].name,
            sram_capacity=QEMU_SRAM[0].size,
        )
    return elf_sizes(elf, mcu_profile(mcu_name))


def image_sizes(image: Path, target: str, mcu_name: str) -> ElfSizes | None:
    """What the ARM image of a node of ``mcu_name`` built for ``target`` takes, per memory region,
    read from its ELF beside ``image`` (the ELF itself, or the .bin flashed from it); None when
    there is no ELF (a sim node's host executable). QEMU images are measured against QEMU's
    memories, board images against their MCU's."""
    elf = image.with_suffix(".elf")
    if target not in TARGET_APPS or not elf.is_file():
        return None
    return _sizes(elf, QEMU_MCUS[mcu_name] if target == "qemu" else mcu_name)


def require_tools() -> None:
    """CMake and the ARM compiler are there, else a BuildError that says how to get them."""
    for tool, package in (("cmake", "cmake"), (ARM_GCC, "gcc-arm-none-eabi")):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} is not installed ({package})", hint="run `make setup`")


def configure_and_build(
    tree: Path,
    mcu_name: str,
    board: str,
    defines: Mapping[str, str],
    target: str,
    what: str,
    log: Path,
    lock: int | None,
) -> None:
    """Configure ``tree`` (firmware/arm with the toolchain file, for NMCM_MCU ``mcu_name`` on
    ``board``, with ``defines``) and build ``target`` in it; ``what`` names the build in
    progress and errors, whose output goes to ``log``. The caller holds ``lock`` on the tree."""
    root = firmware_dir()
    configure = [
        "cmake",
        "-S",
        str(root / "arm"),
        "-B",
        str(tree),
        f"-DCMAKE_TOOLCHAIN_FILE={root / TOOLCHAIN_FILE}",
        f"-DNMCM_MCU={mcu_name}",
        f"-DNMCM_BOARD={board}",
        *(f"-D{k}={v}" for k, v in defines.items()),
    ]
    if not (tree / "CMakeCache.txt").is_file() and shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    run_step(configure, f"configuring the {mcu_name} build of {what}", log, lock)
    run_step(
        ["cmake", "--build", str(tree), "--target", target, f"-j{JOBS}"],
        f"building {what} ({mcu_name})",
        log,
        lock,
    )


def _image(
    key: str, app: str, mcu_name: str, board: str, files: dict[str, Path], *, rebuilt: bool
) -> ArmImage:
    return ArmImage(
        key=key,
        app=app,
        mcu=mcu_name,
        board=board,
        elf=files["elf"],
        bin=files["bin"],
        hex=files["hex"],
        map=files["map"],
        sizes=_sizes(files["elf"], mcu_name),
        rebuilt=rebuilt,
        stack=_stack(files["elf"].with_name(STACK_REPORT)),
    )


STACK_REPORT = "stack.json"


def _reserved_stack(elf: Path) -> int:
    """Bytes of .stack in an image (the linker script's __stack_start__ to __stack_end__)."""
    symbols = symbol_addresses(elf, ("__stack_start__", "__stack_end__"))
    return symbols.get("__stack_end__", 0) - symbols.get("__stack_start__", 0)


def _stack(path: Path) -> StackReport | None:
    try:
        return report_of(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError):
        return None  # an image built without the call graph, or one whose report is damaged


def build_tree(mcu_name: str, board: str, overrides: Mapping[str, str], app: str) -> Path:
    """The shared build tree of every node of this MCU, board, wiring and firmware source."""
    root = firmware_dir()
    parts = [source_digest(root), compiler_id(ARM_GCC), mcu_name, board, app]
    parts += [f"{k}={v}" for k, v in sorted(overrides.items())]
    digest = sha256_hex("\n".join(parts).encode())[:16]
    return cache_dir() / "arm-build" / f"{mcu_name}-{digest}"


def build_arm_node(
    config_dir: Path,
    mcu: str,
    key: str,
    *,
    app: str = "node-board",
    board: str | None = None,
    w5500: W5500Spec | None = None,
) -> ArmImage:
    """The image of the node whose ``nmcm export`` folder (nmcm_stage.h, stage.blob) is
    ``config_dir``, for ``mcu`` (NMCM_MCU), built into the cache under ``key`` (see ``arm_key``),
    unless it is there already. The node reports ``key[:32]`` as its firmware hash."""
    spec = APPS.get(app)
    if spec is None or not app_available(app):
        raise BuildError(f"no firmware application {app!r} in {firmware_dir()}")
    board = board or default_board(mcu)
    out = cache_dir() / "arm" / key[:24]
    files = {ext: out / f"{spec.target}.{ext}" for ext in ("elf", "bin", "hex", "map")}
    if all(p.is_file() for p in files.values()):
        return _image(key, app, mcu, board, files, rebuilt=False)

    require_tools()
    overrides = w5500_overrides(w5500)
    tree = build_tree(mcu, board, overrides, app)
    log = out / "build.log"
    defines = {
        "NMCM_NODE_CONFIG_DIR": str(config_dir.resolve()),
        "NMCM_FIRMWARE_HASH": key[:32],
        **dict(sorted(overrides.items())),
    }
    if app == "node-board":  # first linked with the board's default stack, sized below
        defines["NMCM_NODE_STACK_SIZE"] = ""
        defines["NMCM_STACK_SIZE"] = ""  # the tree's other apps keep the board's default
    with build_lock(tree) as lock:
        if all(p.is_file() for p in files.values()):  # another nmcm built it while we waited
            return _image(key, app, mcu, board, files, rebuilt=False)
        out.mkdir(parents=True, exist_ok=True)
        log.write_text(f"# {app} for {mcu} ({board}) from {config_dir}\n")
        what = f"{app} for {config_dir.name}"
        configure_and_build(tree, mcu, board, defines, spec.target, what, log, lock)
        built = tree / spec.directory / spec.target
        if app == "node-board":
            try:
                report = image_stack(tree)
            except ValueError as exc:
                raise BuildError(f"cannot compute the stack depth of {what}: {exc}") from None
            # A board image reserves the stack its call graph needs plus the margin (stack.py)
            # instead of the linker script's default, when the graph bounds it: the build links
            # again if that differs.
            reserve = reserve_bytes(report)
            if reserve is not None and _reserved_stack(built.with_suffix(".elf")) != reserve:
                sized = {**defines, "NMCM_NODE_STACK_SIZE": str(reserve)}
                configure_and_build(tree, mcu, board, sized, spec.target, what, log, lock)
            atomic_write(out / STACK_REPORT, json.dumps(report.as_dict(), indent=1).encode())
        # The ELF last: its presence is what makes the cache entry complete.
        for ext in ("map", "bin", "hex", "elf"):
            tmp = out / f".{spec.target}.{ext}.{os.getpid()}.tmp"
            shutil.copyfile(built.with_name(f"{spec.target}.{ext}"), tmp)
            tmp.replace(files[ext])
    return _image(key, app, mcu, board, files, rebuilt=True)
