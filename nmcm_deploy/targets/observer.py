"""Talking to a recorded node as an observer, whatever its target: asking its STATUS (`status`,
the training job's blame) and stopping it (`down`, an apply that replaces it).

An observer says its cluster and model in HELLO: the node refuses observers of other clusters and
models (docs/protocol.md), so a tool of one cluster can neither read nor stop another's.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from nmcm_deploy.coordinator.link import HandshakeRefused, Identity, NodeFailed, NodeLink
from nmcm_deploy.errors import NmcmError
from nmcm_deploy.protocol import Role, Shutdown, StatusReport
from nmcm_deploy.reconcile.state import NodeState
from nmcm_deploy.targets.base import Endpoint
from nmcm_deploy.targets.ports import listening
from nmcm_deploy.targets.registry import of_node


def observer_identity(cluster: str, node: NodeState) -> Identity:
    """What `status` and `down` say in HELLO to a recorded node."""
    model = bytes.fromhex(node.model_hash) if node.model_hash else bytes(16)
    return Identity(cluster, model, 0xFFFF, 0)


def _open(
    name: str, node: NodeState, cluster: str, where: Endpoint, connect_timeout: float
) -> NodeLink:
    return NodeLink.open(
        name,
        where.host,
        where.port,
        observer_identity(cluster, node),
        role=Role.OBSERVER,
        connect_timeout=connect_timeout,
        timeout=2.0,
        uart=where.uart,
    )


def stop_node(name: str, node: NodeState, cluster: str) -> str | None:
    """SHUTDOWN over the network (as an observer), then signals if the process lingers. Returns
    why the node answering on the node's port was left alone (another cluster's), else None."""
    target = of_node(node)
    where = target.endpoint(node, Role.OBSERVER)
    if where.port and listening(where.port, where.host):
        try:
            link = _open(name, node, cluster, where, connect_timeout=1.0)
        except HandshakeRefused as exc:
            # Only the process this cluster recorded is signalled (a node recorded before
            # observers said their model); whatever answers the port after that is another's.
            target.halt(node)
            if listening(where.port, where.host):
                return (
                    f"the node answering on {where.host}:{where.port} is not this cluster's "
                    f"({exc.what}); left running"
                )
            return None
        except (NmcmError, OSError):
            pass
        else:
            with contextlib.suppress(NmcmError, OSError):
                link.send(Shutdown())
                link.read(timeout=2.0)
            link.close()
    target.halt(node)
    return None


@dataclass(frozen=True)
class NodeAnswer:
    """What a node said to an observer: its STATUS, or why there is none."""

    report: StatusReport | None
    problem: str = ""  # refused: another cluster's or model's node holds the port
    silent: bool = False  # connected or alive, but no answer in time


def node_status(name: str, node: NodeState, cluster: str) -> NodeAnswer:
    """A node's STATUS, asked for as an observer."""
    where = of_node(node).endpoint(node, Role.OBSERVER)
    try:
        link = _open(name, node, cluster, where, connect_timeout=0.5)
    except HandshakeRefused as exc:
        return NodeAnswer(None, problem=exc.what)
    except NodeFailed:
        return NodeAnswer(None, silent=True)
    try:
        return NodeAnswer(link.status())
    except NmcmError:
        return NodeAnswer(None, silent=True)
    finally:
        link.close()
