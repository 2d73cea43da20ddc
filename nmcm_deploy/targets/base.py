"""What every target shares: the prepared cluster it deploys, the deployment it carries out, and
the `Target` protocol each module of this package implements."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nmcm_deploy.compiler.cluster import CompiledCluster, CompiledStage
from nmcm_deploy.coordinator.link import Identity
from nmcm_deploy.manifest.model import Manifest
from nmcm_deploy.protocol import Role
from nmcm_deploy.reconcile.desired import (
    Change,
    DesiredCluster,
    DesiredNode,
    Observed,
    Op,
    recorded_node,
)
from nmcm_deploy.reconcile.state import ClusterState, NodeState, StateStore


class Reporter(Protocol):
    """Shows the steps of long work; the CLI supplies one bound to the terminal."""

    def step(self, message: str) -> None: ...


@dataclass
class Prepared:
    """A manifest loaded and compiled for a target, with its desired state; nothing written."""

    manifest: Manifest
    target: str
    cluster: CompiledCluster
    desired: DesiredCluster
    store: StateStore

    @property
    def nodes_dir(self) -> Path:
        return self.store.dir / "nodes"

    def identity(self, stage: int) -> Identity:
        """What the coordinator says in HELLO to the node of ``stage``."""
        return Identity(
            cluster=self.cluster.name,
            model_hash=self.cluster.model_hash,
            stage_index=stage,
            stage_count=len(self.cluster.stages),
        )

    def observer(self) -> Identity:
        """What a tool of this cluster says in HELLO as an observer."""
        return Identity(self.cluster.name, self.cluster.model_hash, 0xFFFF, 0)


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    uart: bool = False  # a QEMU node's UART: the connection opens with the link preambles


@dataclass
class Deployment:
    """One apply's node work for a target: the nodes ``changes`` name, or that are not running,
    are brought to ``prepared``; each is recorded in ``state`` as soon as it is up. ``stop``
    stops a recorded node, whatever target it was recorded on."""

    prepared: Prepared
    state: ClusterState
    observed: Observed
    changes: list[Change]
    report: Reporter
    stop: Callable[[str, NodeState], object]

    def changed(self, *ops: Op) -> set[str]:
        """The nodes a change of one of ``ops`` (any op when none is given) names."""
        return {c.node for c in self.changes if c.node and (not ops or c.op in ops)}

    def needs_start(self, node: DesiredNode) -> bool:
        """Whether the node changed or is not running."""
        return node.name in self.changed() or not self.observed.running.get(node.name, False)

    def record(
        self,
        desired: DesiredNode,
        image: Path,
        port: int,
        *,
        pid: int = 0,
        observer_port: int = 0,
        instance: int = 0,
    ) -> None:
        """Record a node that is up, at once."""
        self.state.nodes[desired.name] = recorded_node(
            desired,
            image,
            port,
            self.prepared.cluster.model_hash,
            pid=pid,
            observer_port=observer_port,
            instance=instance,
        )
        self.prepared.store.save(self.state)


class Target(Protocol):
    """One way of running nodes. ``deploy`` builds and starts (or flashes) them; the rest is
    what `observe`, `status`, `down` and the training job need of a recorded node."""

    name: str

    def firmware_key(self, stage: CompiledStage) -> str:
        """The content address of the image the node of ``stage`` runs on this target."""
        ...

    def deploy(self, deployment: Deployment) -> None:
        """Bring the nodes to the manifest, recording each one as soon as it is up."""
        ...

    def alive(self, node: NodeState) -> bool:
        """The node is there to be talked to (its process runs, or its board answers)."""
        ...

    def endpoint(self, node: NodeState, role: Role) -> Endpoint:
        """Where a coordinator or an observer connects to the node."""
        ...

    def halt(self, node: NodeState) -> None:
        """After SHUTDOWN (answered or not): make sure the node's process is gone."""
        ...
