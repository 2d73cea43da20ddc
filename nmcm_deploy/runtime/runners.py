"""Reaching a recorded node and telling whether it runs, per target: what `observe`, `stop_node`,
`status` and the training job need that differs between the targets.

========  ===========================  ==============================  =========================
target    alive                        endpoint (coordinator/observer)  after SHUTDOWN
========  ===========================  ==============================  =========================
sim       the process, its port open   loopback ``port``                signals if it lingers
qemu      the QEMU process             loopback ``port`` / the          signals if it lingers
                                       observers' UART, link preambles
hardware  its W5500 address answers    ``host:port``                    nothing (the board idles)
========  ===========================  ==============================  =========================

Each target is a NodeRunner; ``runner(node.target)`` picks it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from nmcm_deploy.protocol import Role
from nmcm_deploy.reconcile.state import NodeState
from nmcm_deploy.runtime import qemu, sim


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    uart: bool = False  # a QEMU node's UART: the connection opens with the link preambles


class NodeRunner(Protocol):
    def alive(self, node: NodeState) -> bool:
        """The node is there to be talked to (its process runs, or its board answers)."""
        ...

    def endpoint(self, node: NodeState, role: Role) -> Endpoint:
        """Where a coordinator or an observer connects to the node."""
        ...

    def halt(self, node: NodeState) -> None:
        """After SHUTDOWN (answered or not): make sure the node's process is gone."""
        ...


class SimRunner:
    def alive(self, node: NodeState) -> bool:
        return sim.is_node_process(node.pid, node.image or None) and sim.port_open(node.port)

    def endpoint(self, node: NodeState, role: Role) -> Endpoint:
        return Endpoint(sim.LOOPBACK, node.port)

    def halt(self, node: NodeState) -> None:
        if node.pid and not sim.wait_exit(node.pid, 2.0):
            sim.stop_process(node.pid, image=node.image or None)


class QemuRunner:
    def alive(self, node: NodeState) -> bool:
        return qemu.is_node_process(node.pid, node.image or None)

    def endpoint(self, node: NodeState, role: Role) -> Endpoint:
        port = node.observer_port if role is Role.OBSERVER and node.observer_port else node.port
        return Endpoint(qemu.LOOPBACK, port, uart=True)

    def halt(self, node: NodeState) -> None:
        # SHUTDOWN ends the firmware's main(), and with it QEMU (status 0).
        if node.pid and not qemu.wait_exit(node.pid, 3.0):
            qemu.stop_process(node.pid)


class BoardRunner:
    def alive(self, node: NodeState) -> bool:
        return sim.port_open(node.port, node.host)

    def endpoint(self, node: NodeState, role: Role) -> Endpoint:
        return Endpoint(node.host, node.port)

    def halt(self, node: NodeState) -> None:
        pass  # a board idles after SHUTDOWN until it is reset or flashed


_RUNNERS: dict[str, NodeRunner] = {
    "sim": SimRunner(),
    "qemu": QemuRunner(),
    "hardware": BoardRunner(),
}


def runner(node: NodeState) -> NodeRunner:
    """The runner of a recorded node. A node recorded with a W5500 address is a board."""
    if node.host:
        return _RUNNERS["hardware"]
    return _RUNNERS.get(node.target, _RUNNERS["sim"])
