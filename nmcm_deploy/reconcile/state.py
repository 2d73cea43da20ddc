"""The recorded state of a cluster under ``.nmcm/<cluster>/``, written atomically, behind a lock.

``state.json`` says what the last apply did, node by node, as it did it: an interrupted apply
leaves a state that says exactly which nodes were brought up to date, so the next apply continues
from there. The lock file keeps two applies from interleaving and names its holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nmcm_deploy.errors import NmcmError
from nmcm_deploy.files import atomic_write

STATE_FORMAT = 1


def state_root() -> Path:
    """Where the state of all clusters lives: ``$NMCM_STATE_DIR``, else ``.nmcm`` here."""
    return Path(os.environ.get("NMCM_STATE_DIR", ".nmcm"))


@dataclass
class NodeState:
    """What was last done to one node."""

    stage: int
    mcu: str
    target: str
    blob_sha256: str = ""
    config_sha256: str = ""
    firmware_sha256: str = ""
    image: str = ""
    port: int = 0
    pid: int = 0  # sim/qemu: the node's process
    started_at: float = 0.0
    host: str = ""  # where the node listens: hardware, its W5500 IP; empty: loopback (sim/qemu)
    observer_port: int = 0  # qemu: the observers' UART (targets/qemu.py); 0: ``port``
    model_hash: str = ""  # hex: what an observer says in HELLO (the node refuses other models)
    instance: int = 0  # sim/qemu: the number it was started with, which its HELLO_ACK carries
    sram_bytes: int = 0  # the compiler's prediction for its MCU when it was deployed
    flash_bytes: int = 0


@dataclass
class JobState:
    """The training job: which inputs it ran with and how it ended."""

    inputs_sha256: str = ""
    status: str = "never"  # never | running | succeeded | failed
    started_at: float = 0.0
    finished_at: float = 0.0
    error: str = ""
    artifacts: str = ""


@dataclass
class ClusterState:
    cluster: str
    manifest: str = ""
    target: str = ""
    nodes: dict[str, NodeState] = field(default_factory=dict)
    job: JobState = field(default_factory=JobState)
    # The manifest's spec as of the last apply that finished: `plan` names the fields that
    # changed since, in the manifest's own terms.
    spec: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        doc: dict[str, Any] = {"format_version": STATE_FORMAT, **asdict(self)}
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ClusterState:
        doc = json.loads(text)
        if doc.get("format_version") != STATE_FORMAT:
            raise StateError(f"state format {doc.get('format_version')} is not {STATE_FORMAT}")
        return cls(
            cluster=doc["cluster"],
            manifest=doc.get("manifest", ""),
            target=doc.get("target", ""),
            nodes={k: NodeState(**v) for k, v in doc.get("nodes", {}).items()},
            job=JobState(**doc.get("job", {})),
            spec=doc.get("spec", {}),
        )


class StateError(NmcmError):
    pass


class LockHeld(NmcmError):
    pass


def unwritable(path: Path, exc: OSError) -> StateError:
    """The error for a state folder that cannot be written (read-only, full, not ours)."""
    return StateError(
        f"cannot write {exc.filename or path}: {exc.strerror or exc}",
        hint=f"nmcm keeps its state in {state_root()}; set NMCM_STATE_DIR to a writable folder",
    )


class StateStore:
    """One cluster's state directory."""

    def __init__(self, cluster: str, root: Path | None = None) -> None:
        self.cluster = cluster
        self.dir = (root or state_root()) / cluster
        self.path = self.dir / "state.json"

    def log_path(self, node: str) -> Path:
        """A sim or QEMU node's log: the process's output, the firmware's log lines among it
        (`nmcm logs`)."""
        return self.dir / "logs" / f"{node}.log"

    def load(self) -> ClusterState:
        if not self.path.exists():
            return ClusterState(cluster=self.cluster)
        try:
            return ClusterState.from_json(self.path.read_text())
        except (ValueError, KeyError, TypeError) as exc:
            raise StateError(
                f"{self.path} is unreadable ({exc}); remove it to start from scratch"
            ) from exc

    def save(self, state: ClusterState) -> None:
        try:
            atomic_write(self.path, state.to_json().encode())
        except OSError as exc:
            raise unwritable(self.path, exc) from None

    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the cluster's lock for the duration; if another process holds it, say who."""
        lock_path = self.dir / "lock"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fh = open(lock_path, "a+")  # noqa: SIM115 - held open for the lock's lifetime
        except OSError as exc:
            raise unwritable(lock_path, exc) from None
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                holder = fh.read().strip() or "another process"
                raise LockHeld(
                    f"cluster {self.cluster!r} is locked by {holder}",
                    hint=f"wait for it to finish; the lock is {lock_path}",
                ) from None
            fh.seek(0)
            fh.truncate()
            fh.write(
                f"`nmcm {command}` (pid {os.getpid()} on {socket.gethostname()}, "
                f"since {time.strftime('%Y-%m-%d %H:%M:%S')})"
            )
            fh.flush()
            yield
        finally:
            with contextlib.suppress(OSError):
                fh.seek(0)
                fh.truncate()
            fh.close()
