"""The ports of nodes: whether one answers, who holds a loopback one, and taking them for a node.

A node's port may be held by a node of another cluster (the same ports in two manifests), by a
process that is no node at all, or by this very node left over from an apply that was killed
before it recorded the node. The first two are errors that name the holder; the last is stopped,
so that the next apply starts the node afresh. A process is this cluster's when its command line
names the node's folder under the cluster's state folder (sim: its blob; QEMU: ``-name``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from nmcm_deploy.errors import DeployError

if TYPE_CHECKING:
    from nmcm_deploy.coordinator.link import Identity

LOOPBACK = "127.0.0.1"
# /proc/net/tcp: the state column of a listening socket.
TCP_LISTEN = "0A"


def listening(port: int, host: str = LOOPBACK) -> bool:
    """Whether something accepts connections on ``host:port``."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 9 and fields[3] == TCP_LISTEN:
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    if local_port == port:
                        inodes.add(fields[9])
    return inodes


def holder(port: int) -> int | None:
    """The pid of the process listening on ``port`` on this machine, if it can be seen (a process
    of another user's may not be)."""
    inodes = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(entry.name)
    return None


def command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def describe(pid: int) -> str:
    argv = command_line(pid)
    shown = " ".join(argv)
    return f"pid {pid} ({shown[:160]}{'...' if len(shown) > 160 else ''})" if argv else f"pid {pid}"


def _stop(pid: int, port: int, timeout: float = 3.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            if not Path(f"/proc/{pid}").exists() or not listening(port):
                return
            time.sleep(0.05)


def take(ports: list[int], node: str, owner: str) -> list[str]:
    """Make ``ports`` free for ``node``: a process of this node's (``owner`` in its command line:
    one an interrupted apply left unrecorded) is stopped; anything else listening is an error
    naming the port and, where it can be seen, the process. Returns what was stopped."""
    stopped = []
    for port in ports:
        if not listening(port):
            continue
        pid = holder(port)
        if pid is not None and any(owner in arg for arg in command_line(pid)):
            stopped.append(describe(pid))
            _stop(pid, port)
            if not listening(port):
                continue
        who = f"by {describe(pid)}" if pid is not None else "by a process nmcm cannot see"
        raise DeployError(
            f"port {port} for node {node!r} is in use {who}",
            hint="stop that process, or give this cluster other ports (spec.network.port)",
        )
    return stopped


def new_instance() -> int:
    """A fresh number for a node to say in HELLO_ACK (never 0, which a board says)."""
    import secrets

    return secrets.randbelow(0xFFFFFFFF) + 1


def confirm_started(
    name: str,
    port: int,
    identity: Identity,
    instance: int,
    alive: Callable[[], bool],
    log: Path,
    *,
    uart: bool = False,
    timeout: float = 30.0,
) -> None:
    """Until the node answering an observer on ``port`` is the one just started: the cluster and
    model it serves and the instance it was given. Raises DeployError if the process ends first,
    if the port answers for another cluster or another start, or if nothing answers in time."""
    from nmcm_deploy.coordinator.link import HandshakeRefused, NodeFailed, NodeLink
    from nmcm_deploy.protocol import Role

    deadline = time.monotonic() + timeout
    while True:
        if not alive():
            raise DeployError(f"node {name!r} stopped at start-up: {tail(log)} (log: {log})")
        try:
            link = NodeLink.open(
                name,
                LOOPBACK,
                port,
                identity,
                role=Role.OBSERVER,
                connect_timeout=0.5,
                timeout=2.0,
                uart=uart,
            )
        except HandshakeRefused as exc:
            raise DeployError(
                f"port {port} of node {name!r} is answered by a node of another cluster or "
                f"model ({exc.what})"
            ) from None
        except NodeFailed:
            if time.monotonic() >= deadline:
                raise DeployError(
                    f"node {name!r} did not answer on port {port} within {timeout:.0f} s "
                    f"(log: {log})"
                ) from None
            time.sleep(0.1)
            continue
        answered = link.ack.instance
        link.close()
        if answered != instance:
            raise DeployError(
                f"port {port} of node {name!r} is answered by another start of it (instance "
                f"{answered}, not {instance})",
                hint="another apply of this cluster may be running, from another state folder",
            )
        return


def tail(log: Path, lines: int = 3) -> str:
    text = log.read_text(errors="replace").strip().splitlines()[-lines:] if log.exists() else []
    return " / ".join(line.strip() for line in text) or "no output"


def free_port_block(count: int) -> int:
    """A base port such that base .. base + count - 1 are free on loopback right now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((LOOPBACK, 0))
            base = int(s.getsockname()[1])
        if base + count >= 65000:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind((LOOPBACK, port))
        except OSError:
            continue
        return base
    raise DeployError("no block of free loopback ports")
