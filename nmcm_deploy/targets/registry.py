"""The targets nmcm knows, by name, and the target of a recorded node."""

from __future__ import annotations

from nmcm_deploy.reconcile.state import NodeState
from nmcm_deploy.targets.base import Target
from nmcm_deploy.targets.hardware import HardwareTarget
from nmcm_deploy.targets.qemu import QemuTarget
from nmcm_deploy.targets.sim import SimTarget

_TARGETS: dict[str, Target] = {t.name: t for t in (SimTarget(), QemuTarget(), HardwareTarget())}
NAMES: tuple[str, ...] = tuple(_TARGETS)


def target(name: str) -> Target:
    return _TARGETS[name]


def of_node(node: NodeState) -> Target:
    """The target of a recorded node. A node recorded with a W5500 address is a board."""
    if node.host:
        return _TARGETS["hardware"]
    return _TARGETS.get(node.target, _TARGETS["sim"])
