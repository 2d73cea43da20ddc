"""The ``qemu`` target: each node's ARM image under ``qemu-system-arm``, on QEMU's MPS2
board of the node's core (``mps2-an386`` for a Cortex-M4 MCU, ``mps2-an500`` for a Cortex-M7 one,
the MCU profile's ``qemu_machine``), with ``-icount shift=0`` so that instruction counts are
deterministic. Each node logs the instructions of every training step, per layer
(firmware/apps/node-qemu/profile.h); ``first_step`` reads a job's first from the log.

The node firmware (firmware/apps/node-qemu) has four byte streams, each one connection at a time,
carried by its host link: two named pipes read and written through semihosting, which the node's
relay (``qemu_relay.py``, QEMU's parent) joins to loopback TCP ports (docs/protocol.md, "Under
QEMU"). For stage ``s`` of ``K`` and ``network.port`` = ``P``:

======  ==========================  ==========  =====================================
stream  peer                        relay       port
======  ==========================  ==========  =====================================
0       the coordinator             listens     ``P + s`` (as in sim)
1       the upstream neighbour      listens     ``P + K + s`` (stages > 0)
2       the downstream neighbour    connects    ``P + K + s + 1`` (stages < K - 1)
3       observers (status, down)    listens     ``P + 2K + s``
======  ==========================  ==========  =====================================

Observers have a stream of their own because a stream takes one client at a time: `nmcm status`
answers while the coordinator holds stream 0. Like sim nodes, QEMU nodes keep running after
`nmcm apply` (`nmcm down` stops them), each in its own session, recognised by pid *and* command
line. Every node runs under ``timeout`` (``NMCM_QEMU_LIFETIME`` seconds, default 4 h): a node left
behind ends by itself. The pid recorded is QEMU's own, so that a signal to it never leaves the
emulator running without its ``timeout``; the relay ends with it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from nmcm_deploy.build.arm import build_arm_node, stage_key
from nmcm_deploy.compiler.cluster import CompiledStage
from nmcm_deploy.errors import DeployError
from nmcm_deploy.profiles import mcu as mcu_profile
from nmcm_deploy.protocol import Role
from nmcm_deploy.reconcile.state import NodeState
from nmcm_deploy.targets import ports as port_claims
from nmcm_deploy.targets.base import Deployment, Endpoint
from nmcm_deploy.targets.ports import LOOPBACK, tail

NAME = "qemu"
QEMU = "qemu-system-arm"
APP = "node-qemu"
RELAY = Path(__file__).with_name("qemu_relay.py")
DEFAULT_LIFETIME_S = 4 * 3600
READY_TIMEOUT_S = 20.0

# The profile line of a training step (firmware/apps/node-qemu/profile.h).
_PROFILE = re.compile(
    r"^profile batch=(\d+) samples=(\d+) forward=([\d,]*) backward=([\d,]*) loss=(\d+) "
    r"step=(\d+)\s*$"
)


@dataclass(frozen=True)
class NodePorts:
    """The loopback ports of one QEMU node (module docstring)."""

    coordinator: int
    observer: int
    upstream: int | None  # this node listens here for stage s - 1
    downstream: int | None  # this node connects here, to stage s + 1


def node_ports(base: int, stage: int, stages: int) -> NodePorts:
    link = base + stages
    return NodePorts(
        coordinator=base + stage,
        observer=base + 2 * stages + stage,
        upstream=link + stage if stage > 0 else None,
        downstream=link + stage + 1 if stage + 1 < stages else None,
    )


@dataclass(frozen=True)
class StepInstructions:
    """Instructions of one node in one training step (the firmware's `profile` line): per layer
    of its stage, forward and backward summed over the step's micro-batches, the loss, the
    optimizer step. Multiples of 40, the resolution of the timer QEMU counts them with."""

    batch: int
    samples: int
    forward: tuple[int, ...]
    backward: tuple[int, ...]
    loss: int
    optimizer: int
    layer_types: tuple[str, ...] = field(default=(), compare=False)

    @property
    def per_step(self) -> int:
        return sum(self.forward) + sum(self.backward) + self.loss + self.optimizer

    def as_dict(self) -> dict[str, object]:
        return {
            "forward": list(self.forward),
            "backward": list(self.backward),
            "loss": self.loss,
            "optimizer": self.optimizer,
            "per_step": self.per_step,
            "samples": self.samples,
            "layer_types": list(self.layer_types),
        }


def parse_profile(line: str) -> StepInstructions | None:
    m = _PROFILE.match(line.strip())
    if m is None:
        return None

    def numbers(text: str) -> tuple[int, ...]:
        return tuple(int(v) for v in text.split(",")) if text else ()

    return StepInstructions(
        batch=int(m.group(1)),
        samples=int(m.group(2)),
        forward=numbers(m.group(3)),
        backward=numbers(m.group(4)),
        loss=int(m.group(5)),
        optimizer=int(m.group(6)),
    )


def log_mark(log: Path) -> int:
    """Where the log ends now: what a job writes comes after it."""
    return log.stat().st_size if log.exists() else 0


def first_step(log: Path, since: int, timeout: float = 2.0) -> StepInstructions | None:
    """The first training step a node logged after ``since`` (a log_mark). The node writes the
    line right after acknowledging the step, long before a job ends; the wait only covers a
    loaded host."""
    deadline = time.monotonic() + timeout
    while True:
        if log.exists():
            with open(log, "rb") as fh:
                fh.seek(since)
                for raw in fh.read().decode(errors="replace").splitlines():
                    found = parse_profile(raw)
                    if found is not None:
                        return found
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


# --- processes -----------------------------------------------------------------------------------


def lifetime_s() -> int:
    value = os.environ.get("NMCM_QEMU_LIFETIME", "")
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_LIFETIME_S


def emulator(machine: str, elf: Path, *arguments: str) -> list[str]:
    """qemu-system-arm running ``elf`` on QEMU's board ``machine`` with no devices attached: one
    instruction per nanosecond of virtual time (``-icount shift=0``), so that instruction counts
    are exact and the same on every run (firmware/apps/node-qemu/stage_stopwatch.h), and
    semihosting for the log and the exit status, with ``arguments`` as the words of the image's
    command line after its name. No image waits in WFI (a node waits in its host link), so
    ``sleep=off``. Without its ``timeout`` wrapper."""
    words = ["enable=on", "target=native", f"arg={elf.name}", *(f"arg={a}" for a in arguments)]
    return [
        shutil.which(QEMU) or QEMU,
        "-M",
        machine,
        "-nographic",
        "-monitor",
        "none",
        "-icount",
        "shift=0,sleep=off",
        "-semihosting-config",
        ",".join(words),
        "-kernel",
        str(elf),
    ]


def command(
    machine: str, elf: Path, ports: NodePorts, link: Path, instance: int = 0, owner: str = ""
) -> list[str]:
    """The node's relay, and under it qemu-system-arm, without the ``timeout`` wrapper. ``link``:
    the folder of the node's pipes (the relay makes it and removes it when QEMU ends);
    ``instance``: the number the firmware says in HELLO_ACK (a semihosting argument); ``owner``:
    the node's folder, in QEMU's ``-name``, by which a node left unrecorded by an interrupted
    apply is recognised (in the relay's command line too)."""
    relay = [sys.executable, str(RELAY), "--link", str(link)]
    relay += ["--listen", f"0:{ports.coordinator}", "--listen", f"3:{ports.observer}"]
    if ports.upstream is not None:
        relay += ["--listen", f"1:{ports.upstream}"]
    if ports.downstream is not None:
        relay += ["--connect", f"2:{ports.downstream}"]
    return [
        *relay,
        "--",
        *emulator(machine, elf, f"instance={instance}", f"link={link}"),
        *(["-name", owner.replace(",", ",,")] if owner else []),
        # The UARTs carry nothing: the streams go through the host link.
        "-serial",
        "null",
    ]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _descendants(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


def start_node(
    machine: str, elf: Path, ports: NodePorts, log: Path, instance: int = 0, owner: str = ""
) -> tuple[int, int]:
    """Start the node's relay and QEMU under ``timeout`` in their own session (a Ctrl-C of nmcm
    does not stop them), their output appended to ``log``. Returns (QEMU's pid, the wrapper's
    pid)."""
    if shutil.which(QEMU) is None:
        raise DeployError(f"{QEMU} is not installed", hint="run `make setup` (qemu-system-arm)")
    log.parent.mkdir(parents=True, exist_ok=True)
    # A short path: the firmware reads it from QEMU's semihosting command line (256 bytes).
    link = Path(tempfile.mkdtemp(prefix="nmcm-link-"))
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            ["timeout", str(lifetime_s()), *command(machine, elf, ports, link, instance, owner)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
        )
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        for child in _descendants(proc.pid):
            if is_node_process(child, str(elf)):
                return child, proc.pid
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    shutil.rmtree(link, ignore_errors=True)
    raise DeployError(f"{QEMU} did not start: {tail(log)} (log: {log})")


def is_node_process(pid: int, image: str | None = None) -> bool:
    """Whether ``pid`` is a live QEMU running a node image (``image`` when given)."""
    if pid <= 0:
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if ") Z" in stat or not argv or Path(argv[0].decode(errors="replace")).name != QEMU:
        return False
    words = [a.decode(errors="replace") for a in argv]
    if "-kernel" not in words or words.index("-kernel") + 1 >= len(words):
        return False
    kernel = words[words.index("-kernel") + 1]
    if image is None:
        return Path(kernel).name.startswith("nmcm-node-qemu")
    return os.path.realpath(kernel) == os.path.realpath(image)


def stop_process(pid: int, timeout: float = 3.0) -> None:
    """SIGTERM, then SIGKILL if QEMU lingers. Used when SHUTDOWN did not end it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not is_node_process(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if wait_exit(pid, timeout):
            return


def wait_exit(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        if not is_node_process(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


# --- deploying -----------------------------------------------------------------------------------


class QemuTarget:
    """Builds each node's image, (re)starts the nodes that changed or are not running, records
    each one as soon as it answers."""

    name = NAME

    def firmware_key(self, stage: CompiledStage) -> str:
        return stage_key(stage, NAME)

    def deploy(self, deployment: Deployment) -> None:
        prepared = deployment.prepared
        report = deployment.report
        count = len(prepared.desired.nodes)
        images: dict[str, Path] = {}
        # Every image first: a build that fails leaves the running cluster as it was.
        for desired in prepared.desired.nodes:
            machine = mcu_profile(desired.mcu).qemu_machine
            report.step(
                f"building {desired.name} ({desired.mcu} as {machine}, stage {desired.stage})"
            )
            image = build_arm_node(
                prepared.nodes_dir / desired.name, machine, desired.firmware_sha256, app=APP
            )
            images[desired.name] = image.elf
        restart = [d for d in prepared.desired.nodes if deployment.needs_start(d)]
        if restart:
            # A UART cannot tell a node that its downstream neighbour restarted (docs/protocol.md,
            # "Under QEMU"): the nodes upstream of a restarted one restart with it.
            last = max(d.stage for d in restart)
            restart = [d for d in prepared.desired.nodes if d.stage <= last]
        # Downstream first: each node then finds its neighbour listening when it starts.
        for desired in sorted(restart, key=lambda d: -d.stage):
            old = deployment.state.nodes.get(desired.name)
            if old is not None:
                deployment.stop(desired.name, old)
            ports = node_ports(desired.port - desired.stage, desired.stage, count)
            machine = mcu_profile(desired.mcu).qemu_machine
            report.step(
                f"starting {desired.name} under {QEMU} -M {machine} on "
                f"{LOOPBACK}:{ports.coordinator}"
            )
            log = prepared.store.log_path(desired.name)
            owner = str(prepared.nodes_dir / desired.name)
            listened = [ports.coordinator, ports.observer]
            if ports.upstream is not None:
                listened.append(ports.upstream)
            for left in port_claims.take(listened, desired.name, owner):
                report.step(f"stopped {left}: left unrecorded by an interrupted apply")
            instance = port_claims.new_instance()
            pid, _ = start_node(machine, images[desired.name], ports, log, instance, owner)
            try:
                # QEMU listening is not enough: the firmware must be serving, and be this one.
                port_claims.confirm_started(
                    desired.name,
                    ports.observer,
                    prepared.observer(),
                    instance,
                    partial(is_node_process, pid),
                    log,
                    uart=True,
                    timeout=READY_TIMEOUT_S,
                )
            except BaseException:
                stop_process(pid)
                raise
            deployment.record(
                desired,
                images[desired.name],
                ports.coordinator,
                pid=pid,
                observer_port=ports.observer,
                instance=instance,
            )

    def alive(self, node: NodeState) -> bool:
        return is_node_process(node.pid, node.image or None)

    def endpoint(self, node: NodeState, role: Role) -> Endpoint:
        port = node.observer_port if role is Role.OBSERVER and node.observer_port else node.port
        return Endpoint(LOOPBACK, port, uart=True)

    def halt(self, node: NodeState) -> None:
        # SHUTDOWN ends the firmware's main(), and with it QEMU (status 0).
        if node.pid and not wait_exit(node.pid, 3.0):
            stop_process(node.pid)
