"""The desired state of a cluster, computed from its manifest, and its difference from the recorded
and observed state: a list of changes (op, node, field, old, new), which `plan` prints and `apply`
carries out (as kopf's diffs and Terraform's plan)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from nmcm_deploy.compiler.cluster import CompiledCluster
from nmcm_deploy.manifest.model import DEFAULT_SIM_NETWORK, Manifest
from nmcm_deploy.reconcile.state import ClusterState, NodeState


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class DesiredNode:
    name: str
    stage: int
    mcu: str
    target: str
    port: int
    blob_sha256: str
    config_sha256: str
    firmware_sha256: str
    sim_network: str = DEFAULT_SIM_NETWORK  # sim: how the node's network runs (--network)
    sim_pace: str = ""  # sim, spec.sim.pace: model: the node's pace table (--pace), else ""
    # What the compiler predicts the node takes on its MCU (validate's figures), recorded with it
    # so that `plan` can show what a change does to them.
    sram_bytes: int = 0
    flash_bytes: int = 0


@dataclass(frozen=True)
class DesiredCluster:
    name: str
    target: str
    nodes: tuple[DesiredNode, ...]
    job_sha256: str


class Op(str, Enum):
    """What a change does: to a node, or (TRAIN) to the training job."""

    CREATE = "create"
    UPDATE = "update"
    START = "start"
    DELETE = "delete"
    TRAIN = "train"


class NodeField(str, Enum):
    """The recorded facts of a node whose drift from the manifest is an UPDATE."""

    FIRMWARE = "firmware"
    BLOB = "blob"
    CONFIG = "config"
    STAGE = "stage"
    TARGET = "target"


@dataclass(frozen=True)
class Change:
    """One difference: ``op`` on a node (``node``, and for an UPDATE the ``field`` that drifted)
    or, with no node, on the training job."""

    op: Op
    node: str = ""  # empty: the training job
    field: NodeField | None = None
    old: str = ""
    new: str = ""
    reason: str = ""

    @property
    def path(self) -> str:
        """Where the change is, as `plan` shows it: ``nodes.f413.firmware``, ``job``."""
        if not self.node:
            return "job"
        return f"nodes.{self.node}" + (f".{self.field.value}" if self.field else "")

    def as_dict(self) -> dict[str, str]:
        return {
            "op": self.op.value,
            "path": self.path,
            "old": self.old,
            "new": self.new,
            "reason": self.reason,
        }


def recorded_node(
    desired: DesiredNode,
    image: Path,
    port: int,
    model_hash: bytes,
    *,
    pid: int = 0,
    host: str = "",
    observer_port: int = 0,
    instance: int = 0,
) -> NodeState:
    """The record of a node that has just come up as ``desired``."""
    return NodeState(
        stage=desired.stage,
        mcu=desired.mcu,
        target=desired.target,
        blob_sha256=desired.blob_sha256,
        config_sha256=desired.config_sha256,
        firmware_sha256=desired.firmware_sha256,
        image=str(image),
        port=port,
        pid=pid,
        started_at=time.time(),
        host=host,
        observer_port=observer_port,
        model_hash=model_hash.hex(),
        sram_bytes=desired.sram_bytes,
        flash_bytes=desired.flash_bytes,
        instance=instance,
    )


def node_config_sha256(header: str, sim_network: str = DEFAULT_SIM_NETWORK, pace: str = "") -> str:
    """What a node runs with besides its image: its generated header and, in sim, how its network
    runs and its pace table (start-up arguments of the same image, so a change restarts the node,
    as `plan` shows). The defaults add nothing: hashes recorded before the choices existed stay
    valid."""
    if sim_network != DEFAULT_SIM_NETWORK:
        header += f"\n// sim network: {sim_network}\n"
    if pace:
        header += f"\n// sim pace: {sha256_hex(pace.encode())}\n"
    return sha256_hex(header.encode())


def job_inputs(
    manifest: Manifest,
    cluster: CompiledCluster,
    target: str,
    sim_network: str = DEFAULT_SIM_NETWORK,
    sim_pace: tuple[str, ...] = (),
) -> str:
    """Everything a training run's result depends on; a new value means the job runs again.
    The sim network is one of them, as the target is: the weights come out the same, but a run
    through the emulated W5500 is what the user asked to see (its timing, its faults)."""
    dataset: dict[str, Any] = {
        "name": manifest.dataset.name,
        "test_fraction": manifest.dataset.test_fraction,
    }
    if manifest.dataset.npz is not None:
        dataset["npz_sha256"] = file_sha256(manifest.dataset.npz)
    t = manifest.training
    doc = {
        "model_hash": cluster.model_hash.hex(),
        "blobs": [s.blob_sha256 for s in cluster.stages],
        "nodes": [s.plan.node.name for s in cluster.stages],
        "dataset": dataset,
        "training": {
            "epochs": t.epochs,
            "batch_size": t.batch_size,
            "micro_batches": t.micro_batches,
            "loss": t.loss,
            "optimizer": [
                t.optimizer.type,
                t.optimizer.lr,
                t.optimizer.momentum,
                t.optimizer.weight_decay,
            ],
            "shuffle": t.shuffle,
            "seed": t.seed,
            "schedule": t.schedule,
        },
        "target": target,
    }
    if sim_network != DEFAULT_SIM_NETWORK:  # absent by default: earlier job hashes stay valid
        doc["sim_network"] = sim_network
    if sim_pace:  # a paced run is another run: its timing is what the user asked to see
        doc["sim_pace"] = [sha256_hex(t.encode()) for t in sim_pace]
    return sha256_hex(json.dumps(doc, sort_keys=True).encode())


@dataclass
class Observed:
    """What was seen of each recorded node just now: is its process there, does it answer."""

    running: dict[str, bool] = field(default_factory=dict)


def facts(node: NodeState | DesiredNode) -> dict[NodeField, str]:
    """A node's facts that `diff` compares, recorded or desired."""
    return {
        NodeField.FIRMWARE: node.firmware_sha256,
        NodeField.BLOB: node.blob_sha256,
        NodeField.CONFIG: node.config_sha256,
        NodeField.STAGE: str(node.stage),
        NodeField.TARGET: node.target,
    }


def drift(name: str, have: Mapping[NodeField, str], want: Mapping[NodeField, str]) -> list[Change]:
    """The facts of node ``name`` known on both sides that differ, as UPDATEs."""
    return [
        Change(Op.UPDATE, name, f, have[f][:12], want[f][:12])
        for f in NodeField
        if f in have and f in want and have[f] != want[f]
    ]


def diff(desired: DesiredCluster, recorded: ClusterState, observed: Observed) -> list[Change]:
    changes: list[Change] = []
    wanted = {n.name for n in desired.nodes}
    for name in sorted(set(recorded.nodes) - wanted):
        changes.append(Change(Op.DELETE, name, reason="no longer in the manifest"))
    for node in desired.nodes:
        have = recorded.nodes.get(node.name)
        if have is None:
            changes.append(
                Change(Op.CREATE, node.name, new=node.firmware_sha256[:12], reason="new node")
            )
            continue
        drifted = drift(node.name, facts(have), facts(node))
        changes += drifted
        if not drifted and not observed.running.get(node.name, False):
            changes.append(Change(Op.START, node.name, reason="not running"))
    job = recorded.job
    if job.inputs_sha256 != desired.job_sha256:
        changes.append(
            Change(
                Op.TRAIN,
                old=job.inputs_sha256[:12],
                new=desired.job_sha256[:12],
                reason="inputs changed",
            )
        )
    elif job.status != "succeeded":
        changes.append(Change(Op.TRAIN, reason=f"last run {job.status}"))
    elif job.artifacts and not Path(job.artifacts, "model.pt").exists():
        changes.append(Change(Op.TRAIN, reason="artifacts missing"))
    return changes
