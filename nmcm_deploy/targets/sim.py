"""The ``sim`` target: one background process per node on this machine, listening on loopback.

The nodes are the host build of the node firmware (build/host.py). They keep running after `nmcm
apply` returns, as boards do; `nmcm down` stops them. A process is recognised by its pid *and*
its command line, so a recycled pid is never mistaken for a node.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

from nmcm_deploy.build.host import build_sim_node, firmware_key
from nmcm_deploy.compiler.cluster import CompiledStage
from nmcm_deploy.files import atomic_write
from nmcm_deploy.protocol import Role
from nmcm_deploy.reconcile.state import NodeState
from nmcm_deploy.targets import ports
from nmcm_deploy.targets.base import Deployment, Endpoint
from nmcm_deploy.targets.ports import LOOPBACK

NAME = "sim"
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


def start_node(
    image: Path,
    blob: Path,
    port: int,
    log: Path,
    firmware_hash: str,
    network: str = "posix",
    instance: int = 0,
    pace: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a node in its own session (so a Ctrl-C of nmcm does not stop it). ``network``:
    ``posix`` (host sockets) or ``w5500-emulator`` (the W5500 driver on an emulated chip);
    ``instance``: the number its HELLO_ACK carries; ``pace``: its pace table, if paced."""
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
                *(["--pace", str(pace)] if pace is not None else []),
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


def _runs(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


class SimTarget:
    name = NAME

    def firmware_key(self, stage: CompiledStage) -> str:
        return firmware_key(stage.header, NAME)

    def deploy(self, deployment: Deployment) -> None:
        """Build every node (a cache hit when unchanged); (re)start the ones that changed or
        are not running."""
        prepared = deployment.prepared
        report = deployment.report
        for desired in prepared.desired.nodes:
            folder = prepared.nodes_dir / desired.name
            report.step(f"building {desired.name} ({desired.mcu}, stage {desired.stage})")
            image = build_sim_node(folder, desired.firmware_sha256)
            if not deployment.needs_start(desired):
                continue
            old = deployment.state.nodes.get(desired.name)
            if old is not None:
                deployment.stop(desired.name, old)
            for left in ports.take([desired.port], desired.name, str(folder)):
                report.step(
                    f"stopped {left}: {desired.name} left unrecorded by an interrupted apply"
                )
            report.step(f"starting {desired.name} on {LOOPBACK}:{desired.port}")
            log = prepared.store.log_path(desired.name)
            instance = ports.new_instance()
            pace = None
            if desired.sim_pace:
                pace = folder / "pace.txt"
                atomic_write(pace, desired.sim_pace.encode())
            proc = start_node(
                image,
                folder / "stage.blob",
                desired.port,
                log,
                desired.firmware_sha256[:32],
                desired.sim_network,
                instance,
                pace,
            )
            try:
                ports.confirm_started(
                    desired.name,
                    desired.port,
                    prepared.observer(),
                    instance,
                    partial(_runs, proc),
                    log,
                )
            except BaseException:
                stop_process(proc.pid)
                raise
            deployment.record(desired, image, desired.port, pid=proc.pid, instance=instance)

    def alive(self, node: NodeState) -> bool:
        return is_node_process(node.pid, node.image or None) and ports.listening(node.port)

    def endpoint(self, node: NodeState, role: Role) -> Endpoint:
        return Endpoint(LOOPBACK, node.port)

    def halt(self, node: NodeState) -> None:
        if node.pid and not wait_exit(node.pid, 2.0):
            stop_process(node.pid, image=node.image or None)
