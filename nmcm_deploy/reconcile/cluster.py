"""Reconciling a cluster: what `plan`, `apply`, `status` and `down` share.

``prepare`` computes the desired state from a manifest without touching anything; ``observe``
looks at what is running; ``diff`` (desired.py) compares them. The apply steps record each node in
the state as soon as it is done, so an interrupted apply is continued by the next one.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from nmcm_deploy.compiler.cluster import CompiledCluster, compile_cluster, write_export
from nmcm_deploy.coordinator.link import HandshakeRefused, Identity, NodeFailed, NodeLink
from nmcm_deploy.errors import DeployError, NmcmError
from nmcm_deploy.manifest import load_manifest
from nmcm_deploy.manifest.model import SIM_NETWORKS, Manifest
from nmcm_deploy.protocol import Role, Shutdown, StatusReport
from nmcm_deploy.reconcile.desired import (
    Change,
    DesiredCluster,
    DesiredNode,
    Observed,
    diff,
    job_inputs,
    node_config_sha256,
)
from nmcm_deploy.reconcile.state import ClusterState, NodeState, StateStore
from nmcm_deploy.runtime import ports, sim
from nmcm_deploy.runtime.runners import runner

TARGETS = ("sim", "qemu", "hardware")
AVAILABLE_TARGETS = ("sim", "qemu", "hardware")


class Reporter(Protocol):
    """Shows the steps of long work; the CLI supplies one bound to the terminal."""

    def step(self, message: str) -> None: ...


class TargetUnavailable(NmcmError):
    pass


@dataclass
class Prepared:
    manifest: Manifest
    target: str
    cluster: CompiledCluster
    desired: DesiredCluster
    store: StateStore

    @property
    def nodes_dir(self) -> Path:
        return self.store.dir / "nodes"

    def identity(self, stage: int) -> Identity:
        return Identity(
            cluster=self.cluster.name,
            model_hash=self.cluster.model_hash,
            stage_index=stage,
            stage_count=len(self.cluster.stages),
        )


def choose_target(
    manifest: Manifest, override: str | None, available: tuple[str, ...] = AVAILABLE_TARGETS
) -> str:
    target = override or manifest.target
    if target not in TARGETS:
        raise NmcmError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if target not in available:
        raise TargetUnavailable(
            f"target {target!r} is not available yet in this version of nmcm",
            hint="run the cluster simulated with --target sim",
        )
    return target


def choose_sim_network(manifest: Manifest, override: str | None) -> str:
    """spec.sim.network, or --sim-network: posix or w5500-emulator."""
    network = override or manifest.sim.network
    if network not in SIM_NETWORKS:
        raise NmcmError(f"unknown sim network {network!r}; choose one of {', '.join(SIM_NETWORKS)}")
    return network


def prepare(
    file: Path,
    target_override: str | None,
    available: tuple[str, ...] = AVAILABLE_TARGETS,
    sim_network: str | None = None,
) -> Prepared:
    """Load and compile the manifest and compute its desired state; writes nothing.
    ``available``: the targets the calling command can carry out (`build` does more than
    `apply` can deploy yet)."""
    from nmcm_deploy.build.arm import stage_key
    from nmcm_deploy.build.host import firmware_key

    manifest = load_manifest(file)
    target = choose_target(manifest, target_override, available)
    network = choose_sim_network(manifest, sim_network)
    if target != "sim":
        network = SIM_NETWORKS[0]  # only sim nodes have a choice
    cluster = compile_cluster(manifest, target)
    misfits = [s for s in cluster.stages if not s.plan.fit.fits]
    if misfits:
        s = misfits[0]
        raise DeployError(
            f"stage {s.plan.index} on node {s.plan.node.name} ({s.plan.node.mcu}) does not fit: "
            f"{s.plan.fit.shortfall()}"
        )
    nodes = tuple(
        DesiredNode(
            name=s.plan.node.name,
            stage=s.plan.index,
            mcu=s.plan.node.mcu,
            target=target,
            port=s.network.listen_port,
            blob_sha256=s.blob_sha256,
            config_sha256=node_config_sha256(s.header, network),
            # Board and QEMU images are cross builds of their own (build/arm.py), the blob inside.
            firmware_sha256=(
                stage_key(s, target)
                if target in ("hardware", "qemu")
                else firmware_key(s.header, target)
            ),
            sim_network=network,
        )
        for s in cluster.stages
    )
    desired = DesiredCluster(
        cluster.name, target, nodes, job_inputs(manifest, cluster, target, network)
    )
    return Prepared(manifest, target, cluster, desired, StateStore(cluster.name))


def observe(state: ClusterState) -> Observed:
    observed = Observed()
    for name, node in state.nodes.items():
        observed.running[name] = runner(node).alive(node)
    return observed


def plan_changes(prepared: Prepared) -> tuple[ClusterState, Observed, list[Change]]:
    state = prepared.store.load()
    observed = observe(state)
    return state, observed, diff(prepared.desired, state, observed)


def _runs(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def observer_identity(cluster: str, node: NodeState) -> Identity:
    """What `status` and `down` say in HELLO: the node refuses observers of other clusters and
    models (docs/protocol.md), so a tool of one cluster can neither read nor stop another's."""
    model = bytes.fromhex(node.model_hash) if node.model_hash else bytes(16)
    return Identity(cluster, model, 0xFFFF, 0)


def stop_node(name: str, node: NodeState, cluster: str) -> str | None:
    """SHUTDOWN over the network (as an observer), then signals if the process lingers. Returns
    why the node answering on the node's port was left alone (another cluster's), else None."""
    where = runner(node).endpoint(node, Role.OBSERVER)
    if where.port and sim.port_open(where.port, where.host):
        try:
            link = NodeLink.open(
                name,
                where.host,
                where.port,
                observer_identity(cluster, node),
                role=Role.OBSERVER,
                connect_timeout=1.0,
                timeout=2.0,
                uart=where.uart,
            )
        except HandshakeRefused as exc:
            # Only the process this cluster recorded is signalled (a node recorded before
            # observers said their model); whatever answers the port after that is another's.
            runner(node).halt(node)
            if sim.port_open(where.port, where.host):
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
    runner(node).halt(node)
    return None


@dataclass(frozen=True)
class NodeAnswer:
    """What a node said to an observer: its STATUS, or why there is none."""

    report: StatusReport | None
    problem: str = ""  # refused: another cluster's or model's node holds the port
    silent: bool = False  # connected or alive, but no answer in time


def node_status(name: str, node: NodeState, cluster: str) -> NodeAnswer:
    """A node's STATUS, asked for as an observer."""
    where = runner(node).endpoint(node, Role.OBSERVER)
    try:
        link = NodeLink.open(
            name,
            where.host,
            where.port,
            observer_identity(cluster, node),
            role=Role.OBSERVER,
            connect_timeout=0.5,
            timeout=2.0,
            uart=where.uart,
        )
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


def deploy_nodes(
    prepared: Prepared,
    state: ClusterState,
    observed: Observed,
    changes: list[Change],
    report: Reporter,
) -> None:
    """Bring every node to its desired state, recording each one as soon as it is up."""
    from nmcm_deploy.build.host import build_sim_node

    store = prepared.store
    state.manifest = str(prepared.manifest.path)
    state.target = prepared.target
    for change in changes:
        if change.op == "delete":
            name = change.path.split(".", 1)[1]
            report.step(f"stopping {name} (no longer in the manifest)")
            stop_node(name, state.nodes[name], prepared.cluster.name)
            del state.nodes[name]
            store.save(state)
    write_export(prepared.cluster, prepared.nodes_dir)
    if prepared.target == "hardware":
        from nmcm_deploy.flash.runner import HardwareRunner

        HardwareRunner().deploy(prepared, state, changes, report)
        return
    if prepared.target == "qemu":
        from nmcm_deploy.runtime.qemu import QemuRunner

        QemuRunner().deploy(prepared, state, observed, changes, report)
        return
    touched = {c.path.split(".")[1] for c in changes if c.path.startswith("nodes.")}
    for desired in prepared.desired.nodes:
        folder = prepared.nodes_dir / desired.name
        report.step(f"building {desired.name} ({desired.mcu}, stage {desired.stage})")
        image = build_sim_node(folder, desired.firmware_sha256)
        if desired.name not in touched and observed.running.get(desired.name, False):
            continue
        old = state.nodes.get(desired.name)
        if old is not None:
            stop_node(desired.name, old, prepared.cluster.name)
        for left in ports.take([desired.port], desired.name, str(folder)):
            report.step(f"stopped {left}: {desired.name} left unrecorded by an interrupted apply")
        report.step(f"starting {desired.name} on 127.0.0.1:{desired.port}")
        log = store.dir / "logs" / f"{desired.name}.log"
        instance = ports.new_instance()
        proc = sim.start_node(
            image,
            folder / "stage.blob",
            desired.port,
            log,
            desired.firmware_sha256[:32],
            desired.sim_network,
            instance,
        )
        identity = Identity(prepared.cluster.name, prepared.cluster.model_hash, 0xFFFF, 0)
        try:
            ports.confirm_started(
                desired.name, desired.port, identity, instance, partial(_runs, proc), log
            )
        except BaseException:
            sim.stop_process(proc.pid)
            raise
        pid = proc.pid
        state.nodes[desired.name] = NodeState(
            stage=desired.stage,
            mcu=desired.mcu,
            target=desired.target,
            blob_sha256=desired.blob_sha256,
            config_sha256=desired.config_sha256,
            firmware_sha256=desired.firmware_sha256,
            image=str(image),
            port=desired.port,
            pid=pid,
            started_at=time.time(),
            model_hash=prepared.cluster.model_hash.hex(),
            instance=instance,
        )
        store.save(state)
