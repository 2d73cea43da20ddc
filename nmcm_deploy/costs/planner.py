"""The stage planner: which contiguous layers go on which node, in which pipeline order, for the
shortest modelled epoch, every stage fitting its MCU by the exact memory plan.

Nodes of one MCU on one board are interchangeable, so the search is over *types* of node, as
PipeEdge does: dynamic programming over (layers placed, how many nodes of each type used), each
state keeping the Pareto front of (sum, largest) of its stages' per-micro-batch times. A batch of
M micro-batches takes, in closed form, M x sum for the sequential schedule and sum + (M - 1) x
largest for GPipe's fill and drain, so the fronts hold every split that can be optimal under
either: the search is exact for that closed form, and never enumerates splits one by one.

The closed form leaves out what the event simulation (schedule.py) sees: frames overlapping
compute, the step, the batch's open and close. So the planner ranks the best candidates of the
closed form by the full model (model.estimate) and returns them in that order; when a cluster is
small enough to enumerate every split (``EXHAUSTIVE`` or fewer), all of them are ranked by the full
model instead, so that the choice is the best under the very figures `estimate` prints.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from nmcm_deploy.compiler.fit import StageFit, keeps_momentum, micro_batch_size, stage_fit
from nmcm_deploy.compiler.ir import LayerKind, ModelIR
from nmcm_deploy.costs import model
from nmcm_deploy.costs.features import loss_kernel
from nmcm_deploy.costs.links import W5500Link
from nmcm_deploy.costs.schedule import CONTROL_PAYLOAD, TENSOR_HEAD, frame_bytes
from nmcm_deploy.errors import ModelError
from nmcm_deploy.profiles import McuProfile, board, mcu

if TYPE_CHECKING:
    from nmcm_deploy.manifest.model import Manifest, NodeSpec

Pipeline = tuple[tuple[str, int, int], ...]  # (node, first layer, last layer), stage 0 first
EXHAUSTIVE = 150  # splits: rank every one by the full model at or below this many
SHORTLIST = 32  # candidates of the closed form ranked by the full model


@dataclass(frozen=True)
class NodeType:
    """Nodes with the same MCU on the same board: interchangeable to the cost model."""

    mcu: McuProfile
    board: str
    nodes: tuple[NodeSpec, ...]  # in manifest order

    @property
    def label(self) -> str:
        return f"{self.mcu.name} on {self.board}"


@dataclass(frozen=True)
class Candidate:
    pipeline: Pipeline
    epoch_s: float  # the full model (model.estimate)
    step_s: float
    bottleneck: int  # the stage with the most compute and link time per micro-batch


@dataclass(frozen=True)
class Plan:
    """The planner's choice first, then the next best, all ranked by the full model."""

    ranked: tuple[Candidate, ...]
    unused: tuple[str, ...]  # nodes the choice leaves out
    searched: int  # candidates ranked by the full model
    exhaustive: bool  # every split was ranked (else: the closed form's shortlist)

    @property
    def best(self) -> Candidate:
        return self.ranked[0]


def node_types(nodes: Sequence[NodeSpec]) -> list[NodeType]:
    grouped: dict[tuple[str, str], list[NodeSpec]] = {}
    for node in nodes:
        grouped.setdefault((node.mcu, model.board_of(node)), []).append(node)
    return [NodeType(mcu(m), b, tuple(ns)) for (m, b), ns in grouped.items()]


@dataclass
class _Ranges:
    """Per layer range and node type: whether the stage fits, and its time per micro-batch."""

    fits: dict[tuple[int, int, int], bool]
    time: dict[tuple[int, int, int], float]
    shortfall: dict[tuple[int, int, int], str]


def _ranges(manifest: Manifest, ir: ModelIR, types: Sequence[NodeType]) -> _Ranges:
    training = manifest.training
    count = len(ir.layers)
    mb = micro_batch_size(training.batch_size, training.micro_batches)
    loss = loss_kernel(training.loss, ir.layers[-1].kind is LayerKind.SOFTMAX)
    momentum = keeps_momentum(training.optimizer.momentum)
    decay = training.optimizer.weight_decay != 0.0
    control = frame_bytes(CONTROL_PAYLOAD)
    out = _Ranges({}, {}, {})
    for t, kind in enumerate(types):
        weights = model.timing_weights(kind.mcu)
        sec = model.seconds_per_unit(kind.mcu, weights)
        link = W5500Link.of_board(board(kind.board))
        for i in range(count):
            for j in range(i, count):
                first, last = i == 0, j == count - 1
                fit = _range_fit(manifest, ir, i, j, kind, training.batch_size)
                out.fits[i, j, t] = fit.fits
                out.shortfall[i, j, t] = fit.shortfall()
                if not fit.fits:
                    continue
                stage = model.StageModel(ir.layers[i : j + 1], weights, first, last, loss)
                times = stage.times(sec, momentum, decay)
                compute = times.forward_s(mb) + times.backward_s(mb)
                inputs = frame_bytes(TENSOR_HEAD + 4 * mb * times.input_floats)
                outputs = frame_bytes(TENSOR_HEAD + 4 * mb * times.output_floats)
                comm = link.receive_s(inputs) + link.send_s(control)
                if last:
                    compute += times.loss_s(mb)
                    comm += link.receive_s(frame_bytes(4 + 4 * mb))
                else:
                    comm += link.send_s(outputs) + link.receive_s(outputs)
                if not first:
                    comm += link.send_s(inputs)
                out.time[i, j, t] = compute + comm
    return out


def _range_fit(
    manifest: Manifest, ir: ModelIR, first: int, last: int, kind: NodeType, batch: int
) -> StageFit:
    """Whether layers first..last fit a node of ``kind`` as a stage, at ``batch`` samples a batch
    (the manifest's micro-batches, at most one per sample)."""
    training = manifest.training
    count = len(ir.layers)
    is_first, is_last = first == 0, last == count - 1
    # plan_stage tells the first and the last stage by index and count.
    return stage_fit(
        ir,
        first,
        last,
        kind.mcu,
        batch_size=batch,
        micro_batches=min(training.micro_batches, batch),
        momentum=keeps_momentum(training.optimizer.momentum),
        schedule=training.schedule,
        stage_index=0 if is_first else 1,
        stage_count=1 if is_first and is_last else (2 if is_first or is_last else 3),
    )


Stages = tuple[tuple[int, int, int], ...]  # (first layer, last layer, node type), stage 0 first
Entry = tuple[float, float, Stages]  # sum and largest per-micro-batch stage time, the stages


def _front_search(
    ranges: _Ranges, types: Sequence[NodeType], layers: int, micro_batches: int, seq: bool
) -> list[tuple[float, Stages]]:
    """Every pipeline on the Pareto front of (sum, largest) per-micro-batch stage time, with its
    closed-form batch time, best first."""
    available = tuple(len(k.nodes) for k in types)
    # (layers placed, nodes used per type) -> the front of the pipelines that got there
    front: dict[tuple[int, tuple[int, ...]], list[Entry]] = {
        (0, (0,) * len(types)): [(0.0, 0.0, ())]
    }
    for placed in range(layers):
        for (at, used), entries in sorted(front.items()):
            if at != placed:
                continue
            for t in range(len(types)):
                if used[t] >= available[t]:
                    continue
                after = tuple(u + (k == t) for k, u in enumerate(used))
                for last in range(placed, layers):
                    if not ranges.fits[placed, last, t]:
                        continue
                    cost = ranges.time[placed, last, t]
                    target = front.setdefault((last + 1, after), [])
                    for total, largest, stages in entries:
                        step = (placed, last, t)
                        target.append((total + cost, max(largest, cost), (*stages, step)))
        for key in [k for k in front if k[0] > placed]:
            front[key] = _pareto(front[key])
    done = [e for (at, _), es in front.items() if at == layers for e in es]
    return sorted(
        (closed_form(total, largest, micro_batches, seq), st) for total, largest, st in done
    )


def closed_form(total: float, largest: float, micro_batches: int, sequential: bool) -> float:
    """A batch's time from its stages' per-micro-batch times: their sum and the largest."""
    return micro_batches * total if sequential else total + (micro_batches - 1) * largest


def _pareto(entries: list[Entry]) -> list[Entry]:
    """The entries no other beats on both the sum and the largest stage time."""
    kept: list[Entry] = []
    best_largest = float("inf")
    for entry in sorted(entries, key=lambda e: (e[0], e[1])):
        if entry[1] < best_largest:
            kept.append(entry)
            best_largest = entry[1]
    return kept


def all_splits(
    ranges: _Ranges, types: Sequence[NodeType], layers: int, limit: int
) -> list[Stages] | None:
    """Every split over the node types that fits, if there are at most ``limit`` (else None)."""
    available = [len(k.nodes) for k in types]
    found: list[Stages] = []

    def walk(at: int, used: list[int], stages: Stages) -> bool:
        if at == layers:
            found.append(stages)
            return len(found) <= limit
        for t in range(len(types)):
            if used[t] >= available[t]:
                continue
            for last in range(at, layers):
                if ranges.fits[at, last, t]:
                    used[t] += 1
                    ok = walk(last + 1, used, (*stages, (at, last, t)))
                    used[t] -= 1
                    if not ok:
                        return False
        return True

    return found if walk(0, [0] * len(types), ()) else None


def _pipeline(stages: Sequence[tuple[int, int, int]], types: Sequence[NodeType]) -> Pipeline:
    taken = [0] * len(types)
    out = []
    for first, last, t in stages:
        out.append((types[t].nodes[taken[t]].name, first, last))
        taken[t] += 1
    return tuple(out)


def plan_stages(
    manifest: Manifest,
    ir: ModelIR,
    train_samples: int,
    test_samples: int,
    *,
    rank: Callable[[Pipeline], Candidate] | None = None,
) -> Plan:
    """The split and pipeline order of the manifest's nodes with the shortest modelled epoch."""
    from nmcm_deploy.compiler.cluster import plan_pipeline

    types = node_types(manifest.nodes)
    layers = len(ir.layers)
    ranges = _ranges(manifest, ir, types)
    if not any(ranges.fits[0, j, t] for j in range(layers) for t in range(len(types))):
        raise _nothing_fits(manifest, ir, ranges, types)

    def full_model(pipeline: Pipeline) -> Candidate:
        plan = plan_pipeline(manifest, ir, pipeline)
        est = model.estimate(plan, manifest.training, train_samples, test_samples)
        per_stage = [
            ranges.time[s.first, s.last, _type_of(types, s.node.name)] for s in plan.stages
        ]
        return Candidate(pipeline, est.epoch_s, est.step_s, per_stage.index(max(per_stage)))

    rank = rank or full_model
    every = all_splits(ranges, types, layers, EXHAUSTIVE)
    if every is not None:
        shortlist = every
    else:
        sequential = manifest.training.schedule == "sequential"
        found = _front_search(ranges, types, layers, manifest.training.micro_batches, sequential)
        shortlist = [stages for _, stages in found[:SHORTLIST]]
    if not shortlist:
        raise _nothing_fits(manifest, ir, ranges, types)
    ranked = sorted(
        (rank(_pipeline(s, types)) for s in shortlist), key=lambda c: (c.epoch_s, c.pipeline)
    )
    used = {name for name, _, _ in ranked[0].pipeline}
    unused = tuple(n.name for n in manifest.nodes if n.name not in used)
    return Plan(tuple(ranked), unused, len(shortlist), every is not None)


def resolve(manifest: Manifest, ir: ModelIR) -> Pipeline:
    """The pipeline of the manifest's model: its stages as written, or for `stages: auto` the
    planner's choice (compiler/cluster.py, ``Resolver``)."""
    from nmcm_deploy.compiler.cluster import resolve_stages
    from nmcm_deploy.datasets import sample_counts

    if not manifest.stages_auto or len(manifest.nodes) == 1:
        return tuple(resolve_stages(manifest, ir))
    data = manifest.dataset
    train, test = sample_counts(data.name, data.npz, data.test_fraction)
    return plan_stages(manifest, ir, train, test).best.pipeline


def with_micro_batches(manifest: Manifest, count: int) -> Manifest:
    """The manifest with ``count`` micro-batches per batch (an `auto` stays marked as such)."""
    return replace(manifest, training=replace(manifest.training, micro_batches=count))


def resolve_manifest(manifest: Manifest, ir: ModelIR | None = None) -> Manifest:
    """The manifest with `micro_batches: auto` replaced by the count, from 1 to
    ``AUTO_MICRO_BATCHES`` (at most the batch size), whose placement (`resolve`: the manifest's
    stages, or the planner's for `stages: auto`) fits every MCU with the shortest modelled epoch;
    the fewest micro-batches among equals. Any other manifest comes back as it is. ``ir``: the
    model's, when the caller has it (else built: a factory model takes torch)."""
    training = manifest.training
    if not training.micro_batches_auto:
        return manifest
    from nmcm_deploy.compiler.cluster import build_model, plan_pipeline
    from nmcm_deploy.datasets import sample_counts

    if ir is None:
        ir = manifest.model.ir() if manifest.model.source is None else build_model(manifest)[1]
    data = manifest.dataset
    train, test = sample_counts(data.name, data.npz, data.test_fraction)
    best: tuple[float, Manifest] | None = None
    refusal: ModelError | None = None
    for count in training.micro_batch_choices():
        candidate = with_micro_batches(manifest, count)
        try:
            plan = plan_pipeline(candidate, ir, resolve(candidate, ir))
        except ModelError as exc:
            refusal = refusal or exc
            continue
        if not all(s.fit.fits for s in plan.stages):
            if refusal is None:
                s = next(s for s in plan.stages if not s.fit.fits)
                refusal = ModelError(
                    f"stage {s.index} on node {s.node.name} ({s.node.mcu}) does not fit: "
                    f"{s.fit.shortfall()}",
                    where=f"spec.stages[{s.index}]",
                )
            continue
        epoch = model.estimate(plan, candidate.training, train, test).epoch_s
        if best is None or epoch < best[0]:
            best = (epoch, candidate)
    if best is None:
        choices = training.micro_batch_choices()
        why = refusal.message if refusal is not None else "nothing fits"
        raise ModelError(
            f"micro_batches: auto: no count from {choices.start} to {choices.stop - 1} fits "
            f"these nodes (with 1: {why})",
            where="spec.training.micro_batches",
            hint="add nodes, use a smaller batch_size, or MCUs with more memory",
        )
    return best[1]


def _type_of(types: Sequence[NodeType], node: str) -> int:
    return next(t for t, k in enumerate(types) if any(n.name == node for n in k.nodes))


def _nothing_fits(
    manifest: Manifest, ir: ModelIR, ranges: _Ranges, types: Sequence[NodeType]
) -> ModelError:
    """Which layer fits no node at all, and by how much, and the largest batch at which the
    planner could place the model on these nodes."""
    batch = _largest_placeable_batch(manifest, ir, types)
    if batch:
        micro = min(manifest.training.micro_batches, batch)
        hint = (
            f"at batch_size {batch} or less (micro_batches {micro}) the model fits these "
            "nodes; else add nodes, use smaller layers or MCUs with more memory"
        )
    else:
        hint = "no batch size fits these nodes: add nodes, use smaller layers or bigger MCUs"
    for i, layer in enumerate(ir.layers):
        if not any(ranges.fits[i, i, t] for t in range(len(types))):
            where = "; ".join(
                f"{k.label}: {ranges.shortfall[i, i, t]}" for t, k in enumerate(types)
            )
            return ModelError(
                f"layer {i} ({layer.describe()}) fits no node on its own: {where}",
                where="spec.stages",
                hint=hint,
            )
    return ModelError(
        f"the {len(ir.layers)} layers do not fit on the {len(manifest.nodes)} node(s) together",
        where="spec.stages",
        hint=hint,
    )


def _fits_only(manifest: Manifest, ir: ModelIR, types: Sequence[NodeType], batch: int) -> _Ranges:
    """Which layer ranges fit which node type at ``batch`` samples a batch (no times)."""
    count = len(ir.layers)
    out = _Ranges({}, {}, {})
    for t, kind in enumerate(types):
        for i in range(count):
            for j in range(i, count):
                out.fits[i, j, t] = _range_fit(manifest, ir, i, j, kind, batch).fits
    return out


def _largest_placeable_batch(manifest: Manifest, ir: ModelIR, types: Sequence[NodeType]) -> int:
    """The largest batch size below the manifest's at which some split of the model over these
    nodes fits every stage; 0 if none does."""
    for batch in range(manifest.training.batch_size - 1, 0, -1):
        fits = _fits_only(manifest, ir, types, batch)
        found = all_splits(fits, types, len(ir.layers), 1)
        if found is None or found:  # None: more than one split fits
            return batch
    return 0


def splits(layers: int, nodes: int) -> Iterator[tuple[tuple[int, int], ...]]:
    """Every way to cut ``layers`` layers into 1 to ``nodes`` contiguous ranges."""
    for parts in range(1, min(layers, nodes) + 1):
        for cuts in itertools.combinations(range(1, layers), parts - 1):
            bounds = (0, *cuts, layers)
            yield tuple((bounds[k], bounds[k + 1] - 1) for k in range(parts))
