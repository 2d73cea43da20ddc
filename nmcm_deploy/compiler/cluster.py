"""Compile a whole cluster: manifest -> IR -> stages -> memory plans -> blobs + headers.

This is what `nmcm export` writes and what `build` and `apply` start from. ``plan_cluster`` is the
torch-free half (shapes and memory plans of inline-layer models) that `validate` uses;
``compile_cluster`` adds the weights and writes blobs, importing torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nmcm_deploy.compiler.fit import StageFit, keeps_momentum, stage_fit
from nmcm_deploy.compiler.headers import Endpoint, NodeNetwork, stage_header
from nmcm_deploy.compiler.ir import Layer, ModelIR
from nmcm_deploy.compiler.memory import MemoryPlan
from nmcm_deploy.errors import ModelError
from nmcm_deploy.files import atomic_write
from nmcm_deploy.profiles import McuProfile, mcu

if TYPE_CHECKING:
    from torch import nn

    from nmcm_deploy.manifest.model import Manifest, NodeSpec

LOOPBACK = "127.0.0.1"
# A sim-only manifest may leave out the hardware addresses; the header then carries zeros.
UNSET_IP = "0.0.0.0"
UNSET_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True)
class StagePlan:
    index: int
    node: NodeSpec
    profile: McuProfile
    layers: tuple[Layer, ...]
    first: int
    last: int
    fit: StageFit  # its memory plan, blob size and what it needs of its MCU

    @property
    def memory(self) -> MemoryPlan:
        return self.fit.memory


@dataclass(frozen=True)
class ClusterPlan:
    ir: ModelIR
    stages: tuple[StagePlan, ...]


Pipeline = Sequence[tuple[str, int, int]]  # (node, first layer, last layer), stage 0 first
# Chooses the pipeline of a manifest's model: the manifest's stages, or for `stages: auto` the
# stage planner's (nmcm_deploy/costs/planner.py ``resolve``, which the commands pass in).
Resolver = Callable[["Manifest", ModelIR], Pipeline]


def resolve_stages(manifest: Manifest, ir: ModelIR) -> Pipeline:
    """The pipeline the manifest spells out: its stages, or `stages: auto` on one node (the whole
    model there). Over several nodes `auto` needs the stage planner."""
    if not manifest.stages_auto:
        return [(s.node, s.first, s.last) for s in manifest.stages]
    if len(manifest.nodes) == 1:
        return [(manifest.nodes[0].name, 0, len(ir.layers) - 1)]
    raise ModelError(
        "`stages: auto` over several nodes needs the stage planner here",
        where="spec.stages",
    )


def plan_cluster(
    manifest: Manifest, ir: ModelIR, resolve: Resolver = resolve_stages
) -> ClusterPlan:
    """Split ``ir`` into the pipeline ``resolve`` chooses and plan each stage's memory
    (compiler/fit.py)."""
    return plan_pipeline(manifest, ir, resolve(manifest, ir))


def plan_pipeline(
    manifest: Manifest, ir: ModelIR, pipeline: Sequence[tuple[str, int, int]]
) -> ClusterPlan:
    """Plan each stage of ``pipeline`` ((node, first layer, last layer), stage 0 first) under
    the manifest's training job."""
    training = manifest.training
    nodes = {n.name: n for n in manifest.nodes}
    stages = []
    for index, (node_name, first, last) in enumerate(pipeline):
        node = nodes[node_name]
        profile = mcu(node.mcu)
        fit = stage_fit(
            ir,
            first,
            last,
            profile,
            batch_size=training.batch_size,
            micro_batches=training.micro_batches,
            momentum=keeps_momentum(training.optimizer.momentum),
            schedule=training.schedule,
            stage_index=index,
            stage_count=len(pipeline),
        )
        stages.append(
            StagePlan(index, node, profile, ir.layers[first : last + 1], first, last, fit)
        )
    return ClusterPlan(ir, tuple(stages))


def node_network(manifest: Manifest, plan: ClusterPlan, index: int, target: str) -> NodeNetwork:
    """A node's addresses. Outside `hardware` every node listens on loopback."""
    net = manifest.network
    stages = plan.stages

    def endpoint(i: int) -> Endpoint:
        w5500 = stages[i].node.w5500
        ip = str(w5500.ip) if target == "hardware" and w5500 is not None else LOOPBACK
        return Endpoint(ip, net.port + i)

    node = stages[index].node
    return NodeNetwork(
        ip=str(node.w5500.ip) if node.w5500 else UNSET_IP,
        mac=node.w5500.mac if node.w5500 else UNSET_MAC,
        gateway=str(net.gateway or UNSET_IP),
        subnet=str(net.subnet or f"{UNSET_IP}/32"),
        listen_port=net.port + index,
        coordinator=str(net.coordinator or UNSET_IP),
        upstream=endpoint(index - 1) if index > 0 else None,
        downstream=endpoint(index + 1) if index + 1 < len(stages) else None,
    )


# --- the torch half ---------------------------------------------------------------------------


def build_model(manifest: Manifest) -> tuple[nn.Module, ModelIR]:
    """The torch module the manifest describes, with its starting weights, and its IR."""
    from nmcm_deploy.compiler.frontend import (
        check_finite_weights,
        factory_time_limit,
        inline_module,
        load_factory,
        load_weights,
        trace,
    )

    spec = manifest.model
    module: nn.Module
    if spec.source is None:
        ir = spec.ir()
        module = inline_module(ir, spec.seed)
    else:
        with factory_time_limit(spec.source.file, spec.source.factory):
            module = load_factory(spec.source.file, spec.source.factory, spec.seed)
            ir = trace(module, tuple(spec.input))
    if spec.weights is not None:
        load_weights(module, spec.weights)
        check_finite_weights(module, "spec.model.weights", spec.weights.name)
    elif spec.source is not None:
        check_finite_weights(module, "spec.model.source.factory", f"{spec.source.factory}()")
    return module, ir


@dataclass(frozen=True)
class CompiledStage:
    plan: StagePlan
    blob: bytes
    header: str
    network: NodeNetwork

    @property
    def blob_sha256(self) -> str:
        return hashlib.sha256(self.blob).hexdigest()


@dataclass(frozen=True)
class CompiledCluster:
    name: str
    ir: ModelIR
    stages: tuple[CompiledStage, ...]
    param_names: dict[str, tuple[int, int]]  # torch name -> (stage, tensor index)

    @property
    def model_hash(self) -> bytes:
        return self.ir.model_hash()


def render_header(
    manifest: Manifest, plan: ClusterPlan, stage: StagePlan, network: NodeNetwork, blob_size: int
) -> str:
    return stage_header(
        cluster=manifest.name,
        node=stage.node.name,
        mcu=stage.node.mcu,
        model_hash=plan.ir.model_hash(),
        plan=stage.memory,
        layers=stage.layers,
        blob_size=blob_size,
        network=network,
        arena_capacity=stage.profile.sram_capacity - stage.profile.runtime_sram_reserve,
        clock_hz=stage.profile.clock_hz,
    )


def headers_without_torch(
    manifest: Manifest, target: str, resolve: Resolver = resolve_stages
) -> dict[str, str] | None:
    """Each node's generated header for an inline-layer model, computed without torch (for
    `status`); None for factory models, whose structure only tracing can tell."""
    if manifest.model.source is not None:
        return None
    plan = plan_cluster(manifest, manifest.model.ir(), resolve)
    return {
        stage.node.name: render_header(
            manifest,
            plan,
            stage,
            node_network(manifest, plan, stage.index, target),
            stage.fit.blob_bytes,
        )
        for stage in plan.stages
    }


def compile_cluster(
    manifest: Manifest, target: str, resolve: Resolver = resolve_stages
) -> CompiledCluster:
    from nmcm_deploy.compiler.blob import write_blob
    from nmcm_deploy.compiler.frontend import stage_weights

    module, ir = build_model(manifest)
    plan = plan_cluster(manifest, ir, resolve)
    state = module.state_dict()
    compiled = []
    names: dict[str, tuple[int, int]] = {}
    for stage in plan.stages:
        weights = stage_weights(state, stage.layers, stage.memory.tensors)
        blob = write_blob(
            stage.layers,
            tuple(range(stage.first, stage.last + 1)),
            stage.memory,
            weights,
            ir.model_hash(),
        )
        network = node_network(manifest, plan, stage.index, target)
        header = render_header(manifest, plan, stage, network, len(blob))
        for t_index, t in enumerate(stage.memory.tensors):
            names[stage.layers[t.layer].param_names[t.role]] = (stage.index, t_index)
        compiled.append(CompiledStage(stage, blob, header, network))
    return CompiledCluster(manifest.name, ir, tuple(compiled), names)


def plan_json(stage: CompiledStage) -> str:
    """The memory plan of a stage as JSON, for people and tools reading an export."""
    memory = stage.plan.memory
    doc = {
        "format_version": 1,
        "stage": stage.plan.index,
        "node": stage.plan.node.name,
        "mcu": stage.plan.node.mcu,
        "layers": [stage.plan.first, stage.plan.last],
        "micro_batch": memory.micro_batch,
        "slots": memory.slots,
        "arena_bytes": memory.arena_bytes,
        "breakdown": memory.breakdown(),
        "buffers": [
            {
                "kind": b.kind.name.lower(),
                "index": b.index,
                "slot": b.slot,
                "offset": b.offset,
                "bytes": b.bytes,
                "first_use": b.first,
                "last_use": b.last,
            }
            for b in memory.buffers
        ],
        "blob_bytes": len(stage.blob),
        "blob_sha256": stage.blob_sha256,
    }
    return json.dumps(doc, indent=2) + "\n"


def write_export(cluster: CompiledCluster, out: Path) -> list[Path]:
    """Write each node's blob, header and plan under ``out/<node>/``; returns the directories."""
    dirs = []
    for stage in cluster.stages:
        d = out / stage.plan.node.name
        d.mkdir(parents=True, exist_ok=True)
        atomic_write(d / "stage.blob", stage.blob)
        atomic_write(d / "nmcm_stage.h", stage.header.encode())
        atomic_write(d / "memory-plan.json", plan_json(stage).encode())
        dirs.append(d)
    return dirs
