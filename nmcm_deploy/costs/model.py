"""The cost model: modelled time on the MCUs for a planned cluster, before anything is built.

Per stage, the instructions of every kernel call are the calibrated weights (coefficients.py)
times the call's loop counts (features.py); the MCU profile's cycles per instruction and clock
turn them into seconds; the board profile's W5500 figures give each node's link (links.py); and
the schedule simulation (schedule.py) plays the coordinator's schedule over those times, batch by
batch. Every figure this module produces is a model figure: its source is ``model``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property

from nmcm_deploy.compiler.cluster import ClusterPlan
from nmcm_deploy.compiler.fit import stage_slots
from nmcm_deploy.compiler.ir import Layer, LayerKind, numel
from nmcm_deploy.compiler.memory import alias_groups
from nmcm_deploy.costs import coefficients as coef
from nmcm_deploy.costs.features import (
    Call,
    Direction,
    features,
    loss_features,
    loss_kernel,
    step_features,
)
from nmcm_deploy.costs.links import W5500Link
from nmcm_deploy.costs.schedule import BatchTime, NodeTime, StageTimes, simulate_batch
from nmcm_deploy.manifest.model import NodeSpec, TrainingSpec
from nmcm_deploy.profiles import McuProfile, board_names
from nmcm_deploy.profiles import board as board_profile

SOURCE = "model"

CoefficientsOf = Callable[[str], coef.Coefficients]  # core build -> its coefficients


@dataclass(frozen=True)
class LayerCost:
    """One layer's modelled work in one training step of one batch (all its micro-batches): the
    unit of QEMU's per-layer counts in metrics.json."""

    index: int  # in the model
    type: str
    forward_instructions: int
    backward_instructions: int
    forward_cycles: int
    backward_cycles: int


@dataclass(frozen=True)
class NodeEstimate:
    name: str
    mcu: str
    stage: int
    layers: tuple[int, int]
    compute_s: float  # per epoch
    comm_s: float
    idle_s: float
    sram_bytes: int
    flash_bytes: int
    layer_costs: tuple[LayerCost, ...]


@dataclass(frozen=True)
class Estimate:
    schedule: str
    micro_batches: int
    step_s: float  # one training batch of the manifest's batch size
    epoch_s: float  # every training batch of an epoch, then the evaluation of the test set
    nodes: tuple[NodeEstimate, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "format_version": 1,
            "source": SOURCE,
            "schedule": self.schedule,
            "micro_batches": self.micro_batches,
            "step_s": self.step_s,
            "epoch_s": self.epoch_s,
            "nodes": [
                {
                    "name": n.name,
                    "mcu": n.mcu,
                    "stage": n.stage,
                    "layers": list(n.layers),
                    "compute_s": n.compute_s,
                    "comm_s": n.comm_s,
                    "idle_s": n.idle_s,
                    "sram_bytes": n.sram_bytes,
                    "flash_bytes": n.flash_bytes,
                    "layer_costs": [
                        {
                            "index": c.index,
                            "type": c.type,
                            "forward_instructions": c.forward_instructions,
                            "backward_instructions": c.backward_instructions,
                            "forward_cycles": c.forward_cycles,
                            "backward_cycles": c.backward_cycles,
                        }
                        for c in n.layer_costs
                    ],
                }
                for n in self.nodes
            ],
        }


def micro_batch_sizes(samples: int, micro_batches: int) -> list[int]:
    """How the coordinator splits a batch (coordinator/job.py, numpy's array_split)."""
    parts = min(micro_batches, samples)
    base, extra = divmod(samples, parts)
    return [base + 1] * extra + [base] * (parts - extra)


@dataclass(frozen=True)
class StageModel:
    """The modelled instructions of a stage running ``layers``, as functions of a micro-batch's
    samples. Where it sits in the pipeline matters: the first stage never computes its input's
    gradient, the last computes the loss."""

    layers: tuple[Layer, ...]
    weights: coef.Coefficients
    first: bool
    last: bool
    loss_kind: str  # the loss kernel (features.loss_kernel)

    @cached_property
    def input_grads(self) -> tuple[bool, ...]:
        """Per layer: whether its backward computes its input's gradient (memory.py: the first
        stage never computes the gradient of its input, nor of what aliases it)."""
        group0 = set(alias_groups(self.layers)[0])
        return tuple(not (self.first and i in group0) for i in range(len(self.layers)))

    def forward(self, i: int, n: int) -> float:
        layer = self.layers[i]
        return coef.predict(
            self.weights.layer(layer.kind.label, "forward"),
            features(Call(layer, Direction.FORWARD, n)),
        )

    def backward(self, i: int, n: int) -> float:
        layer = self.layers[i]
        if self.last and i == len(self.layers) - 1 and self.loss_kind == "probabilities":
            return 0.0  # the softmax is fused into the loss
        call = Call(layer, Direction.BACKWARD, n, input_grad=self.input_grads[i])
        return coef.predict(self.weights.layer(layer.kind.label, "backward"), features(call))

    def loss(self, n: int) -> float:
        classes = self.layers[-1].out_shape[0]
        return coef.predict(self.weights.loss, loss_features(n, classes, self.loss_kind))

    def step(self, momentum: bool, decay: bool) -> float:
        shapes = [s for ly in self.layers for s in (ly.weight_shape, ly.bias_shape) if s]
        parameters = sum(numel(s) for s in shapes)
        counts = step_features(parameters, len(shapes), momentum, decay)
        return coef.predict(self.weights.step, counts)

    def times(self, seconds_per_instruction: float, momentum: bool, decay: bool) -> StageTimes:
        sec, layers = seconds_per_instruction, range(len(self.layers))
        return StageTimes(
            forward_s=lambda n: sec * sum(self.forward(i, n) for i in layers),
            backward_s=lambda n: sec * sum(self.backward(i, n) for i in layers),
            loss_s=lambda n: sec * self.loss(n),
            step_s=sec * self.step(momentum, decay),
            input_floats=numel(self.layers[0].in_shape),
            output_floats=numel(self.layers[-1].out_shape),
        )


def seconds_per_instruction(mcu: McuProfile) -> float:
    return mcu.cycles_per_instruction.value / mcu.clock_hz


def seconds_per_unit(mcu: McuProfile, weights: coef.Coefficients) -> float:
    """Seconds per what ``weights`` count on ``mcu``: a cycle, or an instruction at the
    profile's cycles per instruction."""
    return 1.0 / mcu.clock_hz if weights.unit == "cycles" else seconds_per_instruction(mcu)


def board_of(node: NodeSpec) -> str:
    """The node's board: the manifest's, else the one board profile carrying its MCU."""
    if node.board:
        return node.board
    return next(b for b in board_names() if board_profile(b).mcu == node.mcu)


@cache
def current_coefficients(core: str) -> coef.Coefficients:
    """The weights `estimate` uses for ``core`` (coefficients.current), read once."""
    return coef.current(core)[0]


@cache
def board_coefficients(mcu: str) -> coef.Coefficients | None:
    """This machine's board calibration of ``mcu`` (coefficients.board_calibration), read once."""
    return coef.board_calibration(mcu)


def timing_weights(
    mcu: McuProfile, coefficients: CoefficientsOf = current_coefficients
) -> coef.Coefficients:
    """The weights the model times ``mcu`` with: its board calibration (cycles measured by the
    DWT, `nmcm calibrate --target hardware`) where this machine has one, else its core's
    instruction weights."""
    return board_coefficients(mcu.name) or coefficients(mcu.core)


def stage_models(
    plan: ClusterPlan,
    training: TrainingSpec,
    coefficients: CoefficientsOf = current_coefficients,
    *,
    timed: bool = False,
) -> list[StageModel]:
    """The model of every stage of ``plan``, stage 0 first: in instructions, or with ``timed``
    in what the stage's MCU is timed with (timing_weights: cycles where a board calibration
    exists; seconds_per_unit turns either into seconds)."""
    count = len(plan.stages)
    loss = loss_kernel(training.loss, plan.ir.layers[-1].kind is LayerKind.SOFTMAX)
    return [
        StageModel(
            s.layers,
            timing_weights(s.profile, coefficients) if timed else coefficients(s.profile.core),
            k == 0,
            k == count - 1,
            loss,
        )
        for k, s in enumerate(plan.stages)
    ]


def node_link(node: NodeSpec) -> W5500Link:
    """What moving a frame through the node's W5500 costs (its board's figures)."""
    return W5500Link.of_board(board_profile(board_of(node)))


def estimate(
    plan: ClusterPlan,
    training: TrainingSpec,
    train_samples: int,
    test_samples: int,
    *,
    coefficients: CoefficientsOf = current_coefficients,
) -> Estimate:
    """The modelled training of ``plan`` under ``training`` on a dataset of ``train_samples``
    training and ``test_samples`` test samples, per epoch."""
    models = stage_models(plan, training, coefficients)
    timed = stage_models(plan, training, coefficients, timed=True)
    momentum = training.optimizer.momentum != 0.0
    decay = training.optimizer.weight_decay != 0.0
    links = [node_link(s.node) for s in plan.stages]
    stages = [
        m.times(seconds_per_unit(s.profile, m.weights), momentum, decay)
        for m, s in zip(timed, plan.stages, strict=True)
    ]
    window = (
        1
        if training.schedule == "sequential"
        else stage_slots(training.schedule, training.micro_batches)
    )

    @cache
    def batch(samples: int, train: bool) -> BatchTime:
        sizes = micro_batch_sizes(samples, training.micro_batches)
        return simulate_batch(stages, links, sizes, window=window, training=train)

    epoch_nodes = [NodeTime() for _ in stages]
    epoch_s = 0.0
    for samples, times_run, train in _batches(train_samples, test_samples, training.batch_size):
        b = batch(samples, train)
        epoch_s += b.duration_s * times_run
        for total, node in zip(epoch_nodes, b.nodes, strict=True):
            total.add(node, times_run)

    sizes = micro_batch_sizes(training.batch_size, training.micro_batches)
    nodes = []
    for k, (m, t, s) in enumerate(zip(models, timed, plan.stages, strict=True)):
        # Cycles: the board calibration's own, else the instructions at the profile's CPI.
        per_unit = 1.0 if t.weights.unit == "cycles" else s.profile.cycles_per_instruction.value
        costs = []
        for i, layer in enumerate(s.layers):
            costs.append(
                LayerCost(
                    s.first + i,
                    layer.kind.label,
                    round(sum(m.forward(i, n) for n in sizes)),
                    round(sum(m.backward(i, n) for n in sizes)),
                    round(per_unit * sum(t.forward(i, n) for n in sizes)),
                    round(per_unit * sum(t.backward(i, n) for n in sizes)),
                )
            )
        nodes.append(
            NodeEstimate(
                name=s.node.name,
                mcu=s.profile.name,
                stage=k,
                layers=(s.first, s.last),
                compute_s=epoch_nodes[k].compute_s,
                comm_s=epoch_nodes[k].comm_s,
                idle_s=epoch_nodes[k].idle_s,
                sram_bytes=s.fit.sram_bytes,
                flash_bytes=s.fit.flash_bytes,
                layer_costs=tuple(costs),
            )
        )
    return Estimate(
        schedule=training.schedule,
        micro_batches=training.micro_batches,
        step_s=batch(training.batch_size, True).duration_s,
        epoch_s=epoch_s,
        nodes=tuple(nodes),
    )


def _batches(train: int, test: int, batch_size: int) -> list[tuple[int, int, bool]]:
    """(samples, how many batches of that size, training?) of one epoch: the training set in
    batches (the last may be short), then the test set in batches, evaluated."""
    out = []
    for samples, train_mode in ((train, True), (test, False)):
        full, rest = divmod(samples, batch_size)
        if full:
            out.append((batch_size, full, train_mode))
        if rest:
            out.append((rest, 1, train_mode))
    return out
