"""Reconciling a cluster: what `plan`, `apply`, `status` and `down` share.

``prepare`` computes the desired state from a manifest without touching anything; ``observe``
looks at what is running; ``diff`` (desired.py) compares them; ``deploy_nodes`` hands the changes
to the target (targets/). Each node is recorded in the state as soon as it is done, so an
interrupted apply is continued by the next one.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from nmcm_deploy.compiler.cluster import (
    ClusterPlan,
    CompiledCluster,
    compile_cluster,
    write_export,
)
from nmcm_deploy.costs import planner
from nmcm_deploy.errors import DeployError, NmcmError
from nmcm_deploy.manifest import load_manifest
from nmcm_deploy.manifest.model import SIM_NETWORKS, Manifest
from nmcm_deploy.reconcile.desired import (
    Change,
    DesiredCluster,
    DesiredNode,
    Observed,
    Op,
    diff,
    job_inputs,
    node_config_sha256,
)
from nmcm_deploy.reconcile.state import ClusterState, StateStore
from nmcm_deploy.targets import registry
from nmcm_deploy.targets.base import Deployment, Prepared, Reporter
from nmcm_deploy.targets.observer import stop_node

TARGETS = registry.NAMES
AVAILABLE_TARGETS = registry.NAMES


class TargetUnavailable(NmcmError):
    pass


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


def sim_paces(manifest: Manifest, cluster: CompiledCluster) -> list[str]:
    """Each stage's pace table under ``spec.sim.pace: model`` (costs/pace.py), else "" each."""
    if manifest.sim.pace != "model":
        return [""] * len(cluster.stages)
    from nmcm_deploy.costs.pace import pace_tables

    plan = ClusterPlan(cluster.ir, tuple(s.plan for s in cluster.stages))
    return pace_tables(plan, manifest.training, manifest.sim.pace_scale)


def prepare(
    file: Path,
    target_override: str | None,
    available: tuple[str, ...] = AVAILABLE_TARGETS,
    sim_network: str | None = None,
) -> Prepared:
    """Load and compile the manifest and compute its desired state; writes nothing.
    ``available``: the targets the calling command can carry out (`build` does more than
    `apply` can deploy yet)."""
    manifest = planner.resolve_manifest(load_manifest(file))
    target = choose_target(manifest, target_override, available)
    network = choose_sim_network(manifest, sim_network)
    if target != "sim":
        network = SIM_NETWORKS[0]  # only sim nodes have a choice
    cluster = compile_cluster(manifest, target, planner.resolve)
    paces = sim_paces(manifest, cluster) if target == "sim" else [""] * len(cluster.stages)
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
            config_sha256=node_config_sha256(s.header, network, pace),
            firmware_sha256=registry.target(target).firmware_key(s),
            sim_network=network,
            sim_pace=pace,
            sram_bytes=s.plan.fit.sram_bytes,
            flash_bytes=s.plan.fit.flash_bytes,
        )
        for s, pace in zip(cluster.stages, paces, strict=True)
    )
    inputs = job_inputs(manifest, cluster, target, network, tuple(p for p in paces if p))
    desired = DesiredCluster(cluster.name, target, nodes, inputs)
    return Prepared(manifest, target, cluster, desired, StateStore(cluster.name))


def observe(state: ClusterState) -> Observed:
    observed = Observed()
    for name, node in state.nodes.items():
        observed.running[name] = registry.of_node(node).alive(node)
    return observed


def plan_changes(prepared: Prepared) -> tuple[ClusterState, Observed, list[Change]]:
    state = prepared.store.load()
    observed = observe(state)
    return state, observed, diff(prepared.desired, state, observed)


def deploy_nodes(
    prepared: Prepared,
    state: ClusterState,
    observed: Observed,
    changes: list[Change],
    report: Reporter,
) -> None:
    """Bring every node to its desired state, recording each one as soon as it is up."""
    store = prepared.store
    state.manifest = str(prepared.manifest.path)
    state.target = prepared.target
    for change in changes:
        if change.op is Op.DELETE:
            report.step(f"stopping {change.node} (no longer in the manifest)")
            stop_node(change.node, state.nodes[change.node], prepared.cluster.name)
            del state.nodes[change.node]
            store.save(state)
    write_export(prepared.cluster, prepared.nodes_dir)
    stop = partial(stop_node, cluster=prepared.cluster.name)
    registry.target(prepared.target).deploy(
        Deployment(prepared, state, observed, changes, report, stop)
    )
