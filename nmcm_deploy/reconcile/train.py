"""The training job of `nmcm apply`: reset the nodes to the starting weights, train through the
coordinator, pull the weights back as the module's state_dict, write the artifacts."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from nmcm_deploy.artifacts import EpochSummary, NodeSummary, RunSummary, write_artifacts
from nmcm_deploy.compiler.blob import read_blob
from nmcm_deploy.coordinator.job import EpochResult, JobConfig, JobResult, TrainingJob
from nmcm_deploy.coordinator.link import NodeFailed, NodeLink
from nmcm_deploy.datasets import batch_order, load_dataset
from nmcm_deploy.errors import NmcmError
from nmcm_deploy.protocol import Ack, MessageType, Role, SetWeights, TensorKind
from nmcm_deploy.reconcile.state import ClusterState, JobState, NodeState
from nmcm_deploy.targets import qemu
from nmcm_deploy.targets.base import Prepared
from nmcm_deploy.targets.observer import node_status
from nmcm_deploy.targets.registry import of_node


def connect(prepared: Prepared, state: ClusterState) -> list[NodeLink]:
    links = []
    for stage in prepared.cluster.stages:
        node = state.nodes[stage.plan.node.name]
        where = of_node(node).endpoint(node, Role.COORDINATOR)
        links.append(
            NodeLink.open(
                stage.plan.node.name,
                where.host,
                where.port,
                prepared.identity(stage.plan.index),
                uart=where.uart,
            )
        )
    return links


def _set_tensor(link: NodeLink, tensor: int, kind: TensorKind, values: np.ndarray) -> None:
    per_chunk = max(1, (link.ack.max_payload - 16) // 4)
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    for offset in range(0, len(flat), per_chunk):
        chunk = flat[offset : offset + per_chunk]
        link.send(SetWeights(tensor=tensor, offset=offset, total=len(flat), data=chunk, kind=kind))
        _, answer = link.expect(MessageType.ACK)
        assert isinstance(answer, Ack)


def reset_weights(prepared: Prepared, links: list[NodeLink]) -> None:
    """Every run starts from the compiled starting weights and empty momentum buffers, whatever
    the nodes did before."""
    for stage, link in zip(prepared.cluster.stages, links, strict=True):
        blob = read_blob(stage.blob)
        for t, weights in enumerate(blob.weights):
            _set_tensor(link, t, TensorKind.PARAMETER, weights)
            if blob.plan.momentum:
                _set_tensor(link, t, TensorKind.MOMENTUM, np.zeros_like(weights))


def run_job(
    prepared: Prepared,
    state: ClusterState,
    out: Path,
    *,
    on_epoch: Callable[[EpochResult], None] | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
) -> RunSummary:
    manifest = prepared.manifest
    store = prepared.store
    # The data first (checked by validate already): the job starts with everything loaded.
    data = load_dataset(
        name=manifest.dataset.name,
        npz=manifest.dataset.npz,
        input_shape=tuple(manifest.model.input),
        test_fraction=manifest.dataset.test_fraction,
        shuffle=manifest.training.shuffle,
        seed=manifest.training.seed,
    )
    state.job = JobState(
        inputs_sha256=prepared.desired.job_sha256, status="running", started_at=time.time()
    )
    store.save(state)
    # QEMU nodes log the instructions of every training step: this job's come after these marks.
    logs = {s.plan.node.name: store.log_path(s.plan.node.name) for s in prepared.cluster.stages}
    marks = {name: qemu.log_mark(log) for name, log in logs.items()}
    links: list[NodeLink] = []
    try:
        links = connect(prepared, state)
        reset_weights(prepared, links)
        t = manifest.training
        config = JobConfig(
            epochs=t.epochs,
            batch_size=t.batch_size,
            micro_batches=t.micro_batches,
            loss=t.loss,
            lr=t.optimizer.lr,
            momentum=t.optimizer.momentum,
            weight_decay=t.optimizer.weight_decay,
            schedule=t.schedule,
        )
        job = TrainingJob(links, config, on_batch=on_batch)
        batches = batch_order(len(data.x_train), t.batch_size, t.epochs, t.shuffle, t.seed)
        result = job.train(
            data.x_train, data.y_train, data.x_test, data.y_test, batches, on_epoch=on_epoch
        )
        state_dict = pull_state_dict(prepared, job)
        modelled = _modelled(prepared, len(data.x_train), len(data.x_test))
        summary = _summary(prepared, result, logs, marks, modelled)
        write_artifacts(summary, state_dict, out)
    except BaseException as exc:
        state.job.status = "failed"
        state.job.finished_at = time.time()
        state.job.error = str(getattr(exc, "message", exc)) or type(exc).__name__
        store.save(state)
        if isinstance(exc, NodeFailed):
            # A node that stopped answering shows up first as its neighbour's timeout: name it.
            told = _blame(prepared, state, exc)
            state.job.error = told.message
            store.save(state)
            raise told from None
        raise
    finally:
        for link in links:
            link.close()
    state.job.status = "succeeded"
    state.job.finished_at = time.time()
    state.job.artifacts = str(out)
    state.job.error = ""
    store.save(state)
    return summary


def _blame(prepared: Prepared, state: ClusterState, failure: NodeFailed) -> NodeFailed:
    """The failure as it should be told: if another node than the one that failed is gone or
    does not answer an observer, that node stopped the job (its neighbours only timed out)."""
    for stage in prepared.cluster.stages:
        name = stage.plan.node.name
        node = state.nodes.get(name)
        if node is None or name == failure.node:
            continue
        if not of_node(node).alive(node):
            what = "is gone (its process ended)"
        elif node_status(name, node, prepared.cluster.name).silent:
            what = "stopped answering (no STATUS within 2 s)"
        else:
            continue
        return NodeFailed(name, f"{what}; node {failure.node!r} then reported: {failure.what}")
    return failure


# What the nodes' own counters measure, by target (the figures of STATUS and the job's timing).
TIME_SOURCES = {"sim": "host clock", "qemu": "qemu instructions", "hardware": "dwt cycles"}


def _elf(target: str, node: NodeState | None, mcu: str) -> dict[str, Any] | None:
    """The node's ARM image per memory region, from its ELF (qemu, hardware); else None."""
    from nmcm_deploy.build.arm import image_sizes

    if node is None or not node.image:
        return None
    sizes = image_sizes(Path(node.image), target, mcu)
    if sizes is None:
        return None
    return {
        "source": "elf",
        "image": str(Path(node.image).with_suffix(".elf")),
        "regions": [
            {"name": r.name, "kind": r.kind, "used_bytes": r.used, "capacity": r.capacity}
            for r in sizes.regions
        ],
    }


def time_source(prepared: Prepared) -> str:
    """What the nodes' figures of this run were measured with; a paced sim node's host clock
    runs at the model's pace (spec.sim.pace)."""
    source = TIME_SOURCES[prepared.target]
    if any(n.sim_pace for n in prepared.desired.nodes):
        source += f" (paced by the model x{prepared.manifest.sim.pace_scale:g})"
    return source


def _modelled(prepared: Prepared, train: int, test: int) -> dict[str, Any] | str:
    """The cost model's epoch for this cluster (costs/model.py), for beside what the run
    measures; or, when the model cannot say, why (for the run's warnings)."""
    from nmcm_deploy.compiler.cluster import ClusterPlan
    from nmcm_deploy.costs import model

    cluster = prepared.cluster
    plan = ClusterPlan(cluster.ir, tuple(s.plan for s in cluster.stages))
    try:
        estimate = model.estimate(plan, prepared.manifest.training, train, test)
    except NmcmError as exc:
        return f"no modelled time on the MCUs: {exc.message}"
    return estimate.as_dict()


def _summary(
    prepared: Prepared,
    result: JobResult,
    logs: dict[str, Path],
    marks: dict[str, int],
    modelled: dict[str, Any] | str | None = None,
) -> RunSummary:
    """What the run measured, per node and epoch, with the instructions QEMU nodes logged."""
    manifest = prepared.manifest
    recorded = prepared.store.load().nodes
    nodes = []
    for stage, timing in zip(prepared.cluster.stages, result.timing, strict=True):
        fit = stage.plan.fit
        name = stage.plan.node.name
        steps = None
        if prepared.target == "qemu":
            steps = qemu.first_step(logs[name], marks[name])
            if steps is not None:
                steps = replace(
                    steps, layer_types=tuple(layer.kind.name.lower() for layer in stage.plan.layers)
                )
        nodes.append(
            NodeSummary(
                name=stage.plan.node.name,
                mcu=stage.plan.node.mcu,
                stage=stage.plan.index,
                layers=(stage.plan.first, stage.plan.last),
                parameters=stage.plan.memory.parameters,
                flash_bytes=fit.flash_bytes,
                flash_capacity=fit.flash_capacity,
                sram_bytes=fit.sram_bytes,
                sram_capacity=fit.sram_capacity,
                arena_bytes=stage.plan.memory.arena_bytes,
                compute_s=timing.compute_s,
                comm_s=timing.comm_s,
                idle_s=timing.idle_s,
                bytes_sent=timing.bytes_sent,
                instructions=None if steps is None else steps.as_dict(),
                elf=_elf(prepared.target, recorded.get(name), stage.plan.node.mcu),
            )
        )
    return RunSummary(
        cluster=prepared.cluster.name,
        target=prepared.target,
        schedule=manifest.training.schedule,
        micro_batches=manifest.training.micro_batches,
        epochs=[
            EpochSummary(e.epoch, e.loss, e.train_accuracy, e.test_accuracy, e.seconds)
            for e in result.epochs
        ],
        wall_time_s=result.wall_time_s,
        nodes=nodes,
        warnings=(*result.warnings, *([modelled] if isinstance(modelled, str) else [])),
        window=result.window,
        micro_batches_run=dict(result.micro_batches_run),
        time_source=time_source(prepared),
        modelled=modelled if isinstance(modelled, dict) else None,
    )


def pull_state_dict(prepared: Prepared, job: TrainingJob) -> dict[str, Any]:
    """The trained weights keyed by the PyTorch module's own parameter names."""
    import torch

    state_dict: dict[str, Any] = {}
    for name, (stage, tensor) in prepared.cluster.param_names.items():
        info = prepared.cluster.stages[stage].plan.memory.tensors[tensor]
        values = job.pull_tensor(stage, tensor, info.count).reshape(info.shape)
        state_dict[name] = torch.from_numpy(values.copy())
    return state_dict
