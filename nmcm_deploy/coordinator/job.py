"""A training job over connected nodes: batches in micro-batches, two schedules, evaluation,
weights pulled back, per-node timing. The message flow is docs/protocol.md, "One batch, step by
step"."""

from __future__ import annotations

import math
import selectors
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from nmcm_deploy.coordinator.link import COORDINATOR_LIMIT, NodeFailed, NodeLink
from nmcm_deploy.protocol import (
    Ack,
    BatchBegin,
    Flags,
    GetWeights,
    Inputs,
    Labels,
    LossKind,
    MessageType,
    Metrics,
    Mode,
    StatusReport,
    Step,
    Weights,
)

SCHEDULES = ("pipelined", "sequential")


@dataclass(frozen=True)
class JobConfig:
    epochs: int
    batch_size: int
    micro_batches: int
    loss: str  # cross_entropy | mse
    lr: float
    momentum: float
    weight_decay: float
    schedule: str  # pipelined | sequential
    answer_timeout: float = 60.0


# A loss this many times the lowest one before it is called divergence (an order of magnitude).
DIVERGENCE_FACTOR = 10.0


@dataclass
class EpochResult:
    epoch: int
    loss: float
    train_accuracy: float
    test_accuracy: float | None  # None without a test set
    seconds: float


@dataclass
class NodeTiming:
    compute_s: float = 0.0
    comm_s: float = 0.0
    idle_s: float = 0.0
    bytes_sent: int = 0


@dataclass
class JobResult:
    epochs: list[EpochResult] = field(default_factory=list)
    wall_time_s: float = 0.0
    timing: list[NodeTiming] = field(default_factory=list)
    final_status: list[StatusReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    window: int = 1  # micro-batches in flight at most (the schedule, limited by the nodes' slots)
    # Training batches by the number of micro-batches they ran in (a batch smaller than
    # micro_batches runs in one per sample).
    micro_batches_run: dict[int, int] = field(default_factory=dict)


def divergence(first_batch_loss: float, epochs: Sequence[EpochResult]) -> str | None:
    """A warning when an epoch's loss is DIVERGENCE_FACTOR times the lowest loss before it (the
    first batch's to begin with): the learning rate is likely too large."""
    lowest, where = first_batch_loss, "the first batch"
    for e in epochs:
        if lowest > 0 and e.loss >= DIVERGENCE_FACTOR * lowest:
            return (
                f"the loss diverged: {e.loss:.4g} in epoch {e.epoch}, {e.loss / lowest:.0f}x "
                f"the {lowest:.4g} of {where}; the learning rate may be too large"
            )
        if e.loss < lowest:
            lowest, where = e.loss, f"epoch {e.epoch}"
    return None


def split_micro_batches(rows: np.ndarray, micro_batches: int) -> list[np.ndarray]:
    """Split a batch's rows into at most M non-empty micro-batches of near-equal size (the first
    ones one larger), each at most ceil(B / M) rows: what every stage's arena is planned for."""
    parts = np.array_split(rows, min(micro_batches, len(rows)))
    return [p for p in parts if len(p)]


class TrainingJob:
    """Drives the nodes of one cluster, stage 0 first in ``links``."""

    def __init__(
        self,
        links: Sequence[NodeLink],
        config: JobConfig,
        *,
        on_batch: Callable[[int, int, int], None] | None = None,
    ) -> None:
        if config.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {config.schedule!r}")
        self.links = list(links)
        self.config = config
        self.on_batch = on_batch
        self.loss_kind = LossKind.MSE if config.loss == "mse" else LossKind.CROSS_ENTROPY
        slots = min(link.ack.slots for link in self.links)
        # Sequential model parallelism: one micro-batch in the pipeline at a time. Pipelined:
        # as many as every stage can stash (GPipe fill and drain, flushed at every batch).
        self.window = 1 if config.schedule == "sequential" else max(1, slots)
        self.next_batch_id = 1
        self.last_micro_batches = 0  # how many the last batch ran in
        self.selector = selectors.DefaultSelector()
        for index, link in enumerate(self.links):
            self.selector.register(link.sock, selectors.EVENT_READ, index)

    @property
    def first(self) -> NodeLink:
        return self.links[0]

    @property
    def last(self) -> NodeLink:
        return self.links[-1]

    def _all(self, message: BatchBegin | Step, batch: int, flags: Flags) -> None:
        for link in self.links:
            link.send(message, batch=batch, flags=flags)
        for link in self.links:
            frame, answer = link.expect(MessageType.ACK, timeout=self.config.answer_timeout)
            if not isinstance(answer, Ack) or answer.acked_type != message.TYPE:
                raise NodeFailed(link.name, f"answered {message.TYPE.name} with {frame.type.name}")

    def run_batch(
        self, x: np.ndarray, y: np.ndarray, *, mode: Mode, epoch: int
    ) -> tuple[float, int]:
        """One batch through the pipeline; returns (loss summed over samples, correct samples)."""
        batch = self.next_batch_id
        self.next_batch_id += 1
        flags = Flags.EVAL if mode is Mode.EVAL else Flags.NONE
        parts = split_micro_batches(np.arange(len(x)), self.config.micro_batches)
        self.last_micro_batches = len(parts)
        self._all(
            BatchBegin(
                batch_size=len(x),
                micro_batches=len(parts),
                mode=mode,
                loss=self.loss_kind,
                epoch=epoch,
            ),
            batch,
            flags,
        )
        x_flat = x.reshape(len(x), -1)
        pending = list(range(len(parts)))
        in_flight: set[int] = set()
        metrics: dict[int, Metrics] = {}
        acked: set[int] = set()
        deadline_step = self.config.answer_timeout
        while len(acked) < len(parts) or len(metrics) < len(parts):
            while pending and len(in_flight) < self.window:
                m = pending.pop(0)
                rows = parts[m]
                self.first.send(Inputs(data=x_flat[rows]), batch=batch, micro_batch=m, flags=flags)
                self.last.send(
                    Labels(labels=y[rows].astype(np.int32)), batch=batch, micro_batch=m, flags=flags
                )
                in_flight.add(m)
            events = self.selector.select(timeout=deadline_step)
            if not events:
                waiting = [m for m in range(len(parts)) if m not in acked or m not in metrics]
                raise NodeFailed(
                    self.links[0].name if len(acked) < len(parts) else self.last.name,
                    f"no answer for {deadline_step:.0f} s in batch {batch} "
                    f"(micro-batches {waiting} outstanding)",
                )
            for key, _ in events:
                link = self.links[int(key.data)]
                frame, message = link.expect(MessageType.ACK, MessageType.METRICS)
                if frame.header.batch != batch:
                    raise NodeFailed(link.name, f"sent a frame of batch {frame.header.batch}")
                m = frame.header.micro_batch
                if isinstance(message, Metrics) and link is self.last:
                    if not math.isfinite(message.loss_sum):
                        raise NodeFailed(link.name, f"reported a loss of {message.loss_sum}")
                    metrics[m] = message
                elif isinstance(message, Ack) and link is self.first:
                    if message.acked_type != MessageType.INPUTS or m in acked:
                        raise NodeFailed(link.name, f"unexpected ACK of {message.acked_type}")
                    acked.add(m)
                else:
                    raise NodeFailed(link.name, f"unexpected {frame.type.name}")
                # In flight until the first stage's ACK *and* the last stage's METRICS: in
                # evaluation stage 0 acknowledges after its forward, while the micro-batch may
                # still wait for its activations in the last stage's slot (its LABELS hold one).
                if m in acked and m in metrics:
                    in_flight.discard(m)
        if mode is Mode.TRAIN:
            cfg = self.config
            self._all(
                Step(lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay), batch, flags
            )
        loss_sum = sum(float(m.loss_sum) for m in metrics.values())
        correct = sum(int(m.correct) for m in metrics.values())
        return loss_sum, correct

    def evaluate(self, x: np.ndarray, y: np.ndarray, epoch: int) -> float | None:
        if len(x) == 0:
            return None
        correct = 0
        size = self.config.batch_size
        for start in range(0, len(x), size):
            _, c = self.run_batch(
                x[start : start + size], y[start : start + size], mode=Mode.EVAL, epoch=epoch
            )
            correct += c
        return correct / len(x)

    def train(
        self,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_test: np.ndarray,
        y_test: np.ndarray,
        batches: list[list[np.ndarray]],
        *,
        on_epoch: Callable[[EpochResult], None] | None = None,
    ) -> JobResult:
        result = JobResult(window=self.window)
        before = [link.status() for link in self.links]
        start = time.perf_counter()
        total_batches = sum(len(e) for e in batches)
        done = 0
        first_loss = math.nan
        for epoch, epoch_batches in enumerate(batches, start=1):
            t0 = time.perf_counter()
            loss_total = 0.0
            correct_total = 0
            seen = 0
            for index, rows in enumerate(epoch_batches, start=1):
                try:
                    loss_sum, correct = self.run_batch(
                        x_train[rows], y_train[rows], mode=Mode.TRAIN, epoch=epoch
                    )
                except NodeFailed as exc:
                    where = f"epoch {epoch}, batch {index} of {len(epoch_batches)}"
                    raise NodeFailed(exc.node, f"{exc.what} ({where})") from None
                ran = self.last_micro_batches
                result.micro_batches_run[ran] = result.micro_batches_run.get(ran, 0) + 1
                if done == 0:
                    first_loss = loss_sum / max(len(rows), 1)
                loss_total += loss_sum
                correct_total += correct
                seen += len(rows)
                done += 1
                if self.on_batch:
                    self.on_batch(epoch, done, total_batches)
            try:
                test_accuracy = self.evaluate(x_test, y_test, epoch)
            except NodeFailed as exc:
                raise NodeFailed(exc.node, f"{exc.what} (evaluation after epoch {epoch})") from None
            er = EpochResult(
                epoch=epoch,
                loss=loss_total / max(seen, 1),
                train_accuracy=correct_total / max(seen, 1),
                test_accuracy=test_accuracy,
                seconds=time.perf_counter() - t0,
            )
            result.epochs.append(er)
            if on_epoch:
                on_epoch(er)
        result.wall_time_s = time.perf_counter() - start
        warning = divergence(first_loss, result.epochs)
        if warning:
            result.warnings.append(warning)
        after = [link.status() for link in self.links]
        result.final_status = after
        for b, a in zip(before, after, strict=True):
            result.timing.append(
                NodeTiming(
                    compute_s=a.seconds(a.compute_ticks - b.compute_ticks),
                    comm_s=a.seconds(a.comm_ticks - b.comm_ticks),
                    idle_s=a.seconds(a.idle_ticks - b.idle_ticks),
                    bytes_sent=a.bytes_sent - b.bytes_sent,
                )
            )
        return result

    def pull_tensor(self, stage: int, tensor: int, count: int) -> np.ndarray:
        """A parameter tensor of a stage, in chunks that fit the coordinator's receive limit."""
        link = self.links[stage]
        out = np.empty(count, dtype=np.float32)
        per_chunk = (COORDINATOR_LIMIT - 16) // 4
        offset = 0
        while offset < count:
            link.send(
                GetWeights(tensor=tensor, offset=offset, count=min(per_chunk, count - offset))
            )
            _, message = link.expect(MessageType.WEIGHTS, timeout=self.config.answer_timeout)
            assert isinstance(message, Weights)
            if message.tensor != tensor or message.offset != offset or message.total != count:
                raise NodeFailed(
                    link.name,
                    f"sent tensor {message.tensor} [{message.offset}, +{message.count}) of "
                    f"{message.total} for tensor {tensor} [{offset}, ...) of {count}",
                )
            out[offset : offset + message.count] = message.data
            offset += message.count
        return out
