"""Host builds of sim nodes. The libraries (core, net, runtime, host main) are built once per
firmware source digest with CMake; each node then compiles only its configuration unit (the
generated ``nmcm_stage.h``) and links — a fraction of a second per node."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from nmcm_deploy.build.sources import compiler_id, firmware_dir, source_digest
from nmcm_deploy.build.steps import build_lock, run_step
from nmcm_deploy.errors import BuildError
from nmcm_deploy.reconcile.desired import sha256_hex

CXX = os.environ.get("CXX", "g++")
# Static libraries of the sim node, dependents before their dependencies (firmware/apps/node):
# the host main and its pacer (--pace), the W5500 network and the node runtime, the W5500 driver
# and its emulator (--network w5500-emulator), the POSIX transport, the protocol and the core.
NODE_LIBRARIES = (
    "nmcm_node_host",
    "nmcm_node_pace",
    "nmcm_runtime_w5500",
    "nmcm_runtime",
    "nmcm_w5500",
    "nmcm_w5500_emulator",
    "nmcm_net_posix",
    "nmcm_net",
    "nmcm_core",
)
NODE_INCLUDES = ("apps/node",)
CXXFLAGS = ("-std=c++17", "-O2", "-fno-exceptions", "-fno-rtti", "-Wall", "-Wextra", "-Werror")
# The emulator moves data on a thread of its own.
LDFLAGS = ("-pthread",)


def cache_dir() -> Path:
    from nmcm_deploy.reconcile.state import state_root

    return state_root() / "cache"


def firmware_key(header: str, target: str) -> str:
    """The build key of one node: sources, its generated header, target and compiler."""
    root = firmware_dir()
    parts = [source_digest(root), sha256_hex(header.encode()), target, compiler_id(CXX)]
    return sha256_hex("\n".join(parts).encode())


def host_libraries() -> Path:
    """Build (once per source digest) the sim node libraries; returns their build directory."""
    root = firmware_dir()
    digest = source_digest(root)
    build = cache_dir() / "host-libs" / digest[:16]
    stamp = build / ".complete"
    if stamp.exists():
        return build
    if shutil.which("cmake") is None:
        raise BuildError("cmake is not installed", hint="run `make setup`")
    with build_lock(build) as lock:
        if not stamp.exists():  # else another nmcm built them while we waited
            _build_libraries(root, build, lock)
            stamp.write_text(digest + "\n")
    return build


def _build_libraries(root: Path, build: Path, lock: int) -> None:
    log = build.with_suffix(".log")
    run_step(
        [
            "cmake",
            "-S",
            str(root),
            "-B",
            str(build),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DNMCM_BUILD_TESTS=OFF",
            "-DNMCM_SANITIZE=OFF",
        ],
        "configuring the host firmware build",
        log,
        lock,
    )
    run_step(
        ["cmake", "--build", str(build), "--target", NODE_LIBRARIES[0], "-j2"],
        "building the sim node libraries",
        log,
        lock,
    )


def _library(build: Path, name: str) -> Path:
    matches = sorted(build.rglob(f"lib{name}.a"))
    if not matches:
        raise BuildError(f"lib{name}.a is missing from {build}")
    return matches[0]


def build_sim_node(config_dir: Path, key: str) -> Path:
    """The sim node executable for the node whose ``nmcm_stage.h`` is in ``config_dir``; built
    into the cache under its key, so an unchanged node is never rebuilt."""
    image = cache_dir() / "nodes" / key[:24] / "nmcm-node"
    if image.is_file():
        return image
    libs = host_libraries()
    root = firmware_dir()
    tmp = image.with_name(f".nmcm-node.{os.getpid()}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    cmd = [CXX, *CXXFLAGS, f"-I{config_dir}"]
    cmd += [f"-I{root / inc}" for inc in NODE_INCLUDES]
    cmd += [str(root / "apps" / "node" / "node_config.cpp")]
    cmd += [str(_library(libs, name)) for name in NODE_LIBRARIES]
    cmd += [*LDFLAGS, "-o", str(tmp)]
    # Into a file of this process's own, renamed when complete: no lock needed.
    run_step(cmd, f"building the sim node in {config_dir}", image.parent / "build.log")
    tmp.replace(image)
    return image
