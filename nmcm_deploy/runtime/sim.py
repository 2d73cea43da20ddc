"""Simulated nodes: one background process per node on this machine, listening on loopback.

They keep running after `nmcm apply` returns, as boards do; `nmcm down` stops them. A process is
recognised by its pid *and* its command line, so a recycled pid is never mistaken for a node.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"
NODE_PROGRAM = "nmcm-node"


def is_node_process(pid: int, image: str | None = None) -> bool:
    """Whether ``pid`` is a live nmcm node (of ``image`` when given), not a recycled pid."""
    if pid <= 0:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if ") Z" in stat:  # a zombie has exited
        return False
    program = cmdline[0].decode(errors="replace") if cmdline else ""
    if image is not None:
        return os.path.realpath(program) == os.path.realpath(image)
    return Path(program).name == NODE_PROGRAM


def port_open(port: int, host: str = LOOPBACK) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def start_node(
    image: Path,
    blob: Path,
    port: int,
    log: Path,
    firmware_hash: str,
    network: str = "posix",
    instance: int = 0,
) -> subprocess.Popen[bytes]:
    """Start a node in its own session (so a Ctrl-C of nmcm does not stop it). ``network``:
    ``posix`` (host sockets) or ``w5500-emulator`` (the W5500 driver on an emulated chip);
    ``instance``: the number its HELLO_ACK carries."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                str(image),
                "--blob",
                str(blob),
                "--host",
                LOOPBACK,
                "--port",
                str(port),
                "--firmware-hash",
                firmware_hash,
                "--network",
                network,
                "--instance",
                str(instance),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    return proc


def stop_process(pid: int, timeout: float = 3.0, image: str | None = None) -> None:
    """SIGTERM, then SIGKILL if it lingers. Used when SHUTDOWN over the network did not work.
    Only a node process (of ``image`` when given) is signalled: never a recycled pid."""
    if not is_node_process(pid, image):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not is_node_process(pid):
            _reap(pid)
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)


def wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(pid)
        if not is_node_process(pid):
            return True
        time.sleep(0.05)
    return False


def _reap(pid: int) -> None:
    # A node started by this very process would otherwise linger as a zombie.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)
