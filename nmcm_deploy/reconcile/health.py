"""How a recorded node is, as `status` tells it: in sync with the manifest or not, and healthy or
why not. Sync is the reconcile's own diff (desired.py) over the facts known at the time: the
recorded node against the manifest, and what the node reports against its record."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from nmcm_deploy.protocol import NodeState as RunState
from nmcm_deploy.protocol import StatusReport
from nmcm_deploy.reconcile.desired import NodeField, drift, facts
from nmcm_deploy.reconcile.state import NodeState
from nmcm_deploy.targets.observer import NodeAnswer


class Sync(str, Enum):
    SYNCED = "Synced"
    OUT_OF_SYNC = "OutOfSync"
    UNKNOWN = "Unknown"  # no report, and the desired image is not known


class Health(str, Enum):
    HEALTHY = "Healthy"
    DEGRADED = "Degraded"  # answers, but its training failed
    UNRESPONSIVE = "Unresponsive"  # there, but silent
    FOREIGN = "Foreign"  # its port answers for another cluster or model
    MISSING = "Missing"  # not recorded, or not there


def node_sync(
    name: str, record: NodeState, want: Mapping[NodeField, str], report: StatusReport | None
) -> Sync:
    """``want``: the desired facts known without compiling the model (may be none). With a
    report, the node must also run the firmware and stage it was recorded with."""
    recorded = facts(record)
    if drift(name, recorded, want):
        return Sync.OUT_OF_SYNC
    if report is None:  # only a known image tells
        return Sync.SYNCED if NodeField.FIRMWARE in want else Sync.UNKNOWN
    expected = {
        NodeField.FIRMWARE: want.get(NodeField.FIRMWARE, recorded[NodeField.FIRMWARE])[:32],
        NodeField.STAGE: recorded[NodeField.STAGE],
    }
    running = {
        NodeField.FIRMWARE: report.firmware_hash.hex(),
        NodeField.STAGE: str(report.stage_index),
    }
    return Sync.OUT_OF_SYNC if drift(name, running, expected) else Sync.SYNCED


def node_health(answer: NodeAnswer | None) -> Health:
    """``answer``: what the node said to an observer; None: it is not there."""
    if answer is None:
        return Health.MISSING
    if answer.problem:
        return Health.FOREIGN
    if answer.report is None:
        return Health.UNRESPONSIVE if answer.silent else Health.MISSING
    return Health.DEGRADED if answer.report.state is RunState.FAILED else Health.HEALTHY
