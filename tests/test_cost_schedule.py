"""The schedule simulation (nmcm_deploy/costs/schedule.py) against what can be worked out by hand:
GPipe's fill and drain on balanced stages, the sequential schedule's sum, the bottleneck bound,
and every node's time adding up to the batch's. Stage times, micro-batch sizes and link costs are
sampled with fixed seeds."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from nmcm_deploy.costs.schedule import (
    CONTROL_PAYLOAD,
    TENSOR_HEAD,
    StageTimes,
    frame_bytes,
    simulate_batch,
)


@dataclass(frozen=True)
class LinearLink:
    """Each side is busy ``per_frame + per_byte * bytes``; the wire takes ``wire`` seconds."""

    per_frame: float = 0.0
    per_byte: float = 0.0
    wire: float = 0.0

    def send_s(self, frame: int) -> float:
        return self.per_frame + self.per_byte * frame

    def receive_s(self, frame: int) -> float:
        return self.per_frame + self.per_byte * frame

    def wire_s(self, frame: int) -> float:
        return self.wire


FREE = LinearLink()


def stage(
    fwd: float, bwd: float, loss: float = 0.0, step: float = 0.0, i: int = 4, o: int = 4
) -> StageTimes:
    return StageTimes(
        forward_s=lambda n: fwd * n,
        backward_s=lambda n: bwd * n,
        loss_s=lambda n: loss * n,
        step_s=step,
        input_floats=i,
        output_floats=o,
    )


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("m", [1, 2, 4, 9])
def test_balanced_pipeline_is_gpipe_fill_and_drain(k: int, m: int) -> None:
    stages = [stage(1.0, 2.0) for _ in range(k)]
    pipelined = simulate_batch(stages, FREE, [1] * m, window=m, training=True)
    sequential = simulate_batch(stages, FREE, [1] * m, window=1, training=True)
    assert pipelined.duration_s == pytest.approx((m + k - 1) * 3.0)
    assert sequential.duration_s == pytest.approx(m * k * 3.0)


def random_cluster(rng: random.Random) -> tuple[list[StageTimes], list[int]]:
    """A chain of 1-4 stages (what leaves one stage is what the next takes) and its batch."""
    k = rng.randint(1, 4)
    floats = [rng.randint(1, 64) for _ in range(k + 1)]
    stages = [
        stage(
            rng.uniform(0.1, 3),
            rng.uniform(0.1, 5),
            loss=rng.uniform(0, 0.5),
            step=rng.uniform(0, 2),
            i=floats[j],
            o=floats[j + 1],
        )
        for j in range(k)
    ]
    sizes = [rng.randint(1, 16) for _ in range(rng.randint(1, 8))]
    return stages, sizes


@pytest.mark.parametrize("seed", range(40))
def test_sequential_is_the_sum_of_every_piece(seed: int) -> None:
    """One micro-batch at a time, nothing overlaps but the last stage's METRICS with the
    backward going up: the batch is the sum of the pieces along that path, worked out here
    step by step."""
    rng = random.Random(seed)
    stages, sizes = random_cluster(rng)
    link = LinearLink(rng.uniform(0, 0.01), rng.uniform(0, 1e-4), rng.uniform(0, 0.005))
    send, receive, wire = link.send_s, link.receive_s, link.wire_s
    control = frame_bytes(CONTROL_PAYLOAD)

    def tensor(floats: int, n: int) -> int:
        return frame_bytes(TENSOR_HEAD + 4 * n * floats)

    def control_round(sent: float, work: list[float]) -> float:
        return (
            sent
            + wire(control)
            + max(receive(control) + w + send(control) + wire(control) for w in work)
        )

    t = control_round(0.0, [0.0] * len(stages))  # BATCH_BEGIN
    first, last = stages[0], stages[-1]
    for n in sizes:
        inputs = tensor(first.input_floats, n)
        labels = frame_bytes(4 + 4 * n)
        t += wire(inputs)
        if len(stages) == 1:
            t += receive(inputs) + receive(labels)
            t += first.forward_s(n) + first.loss_s(n) + first.backward_s(n)
            t += 2 * send(control) + wire(control)  # METRICS, ACK
            continue
        t += receive(inputs)
        for s in stages[:-1]:  # forward down the pipeline
            out = tensor(s.output_floats, n)
            t += s.forward_s(n) + send(out) + wire(out) + receive(out)
        t += receive(labels) + last.forward_s(n) + last.loss_s(n) + last.backward_s(n)
        grads = tensor(last.input_floats, n)
        t += send(grads)
        metrics_in = t + send(control) + wire(control)  # while the gradients travel
        t += wire(grads)
        for s in reversed(stages[:-1]):  # backward up the pipeline
            t += receive(tensor(s.output_floats, n)) + s.backward_s(n)
            if s is first:
                t += send(control) + wire(control)  # the ACK of the INPUTS
            else:
                grads = tensor(s.input_floats, n)
                t += send(grads) + wire(grads)
        t = max(t, metrics_in)
    t = control_round(t, [s.step_s for s in stages])  # STEP

    got = simulate_batch(stages, link, sizes, window=1, training=True)
    assert got.duration_s == pytest.approx(t)


@pytest.mark.parametrize("seed", range(60))
def test_pipelining_is_between_the_bottleneck_and_the_sequential_schedule(seed: int) -> None:
    rng = random.Random(1000 + seed)
    stages, sizes = random_cluster(rng)
    window = rng.randint(1, len(sizes))
    pipelined = simulate_batch(stages, FREE, sizes, window=window, training=True)
    sequential = simulate_batch(stages, FREE, sizes, window=1, training=True)
    bottleneck = max(
        sum(s.forward_s(n) + s.backward_s(n) for n in sizes) + s.step_s for s in stages
    )
    assert bottleneck <= pipelined.duration_s + 1e-9
    assert pipelined.duration_s <= sequential.duration_s + 1e-9
    if window == 1:
        assert pipelined.duration_s == pytest.approx(sequential.duration_s)


@pytest.mark.parametrize("seed", range(40))
@pytest.mark.parametrize("training", [True, False])
def test_every_node_accounts_for_the_whole_batch(seed: int, training: bool) -> None:
    rng = random.Random(2000 + seed)
    stages, sizes = random_cluster(rng)
    link = LinearLink(rng.uniform(0, 0.01), rng.uniform(0, 1e-4), rng.uniform(0, 0.005))
    batch = simulate_batch(stages, link, sizes, window=rng.randint(1, 4), training=training)
    for node, s in zip(batch.nodes, stages, strict=True):
        assert node.compute_s + node.comm_s + node.idle_s == pytest.approx(batch.duration_s)
        work = sum(s.forward_s(n) for n in sizes)
        if training:
            work += sum(s.backward_s(n) for n in sizes) + s.step_s
        if s is stages[-1]:
            work += sum(s.loss_s(n) for n in sizes)
        assert node.compute_s == pytest.approx(work)


def test_evaluation_runs_forward_only_and_ends_without_a_step() -> None:
    stages = [stage(1.0, 100.0, step=50.0), stage(2.0, 100.0, loss=0.5, step=50.0)]
    batch = simulate_batch(stages, FREE, [1, 1, 1], window=3, training=False)
    # Stage 1 is the bottleneck (2 + 0.5 per micro-batch); stage 0's first forward fills.
    assert batch.duration_s == pytest.approx(1.0 + 3 * 2.5)


def test_a_batch_needs_a_stage_a_micro_batch_and_a_window() -> None:
    with pytest.raises(ValueError):
        simulate_batch([], FREE, [1], window=1, training=True)
    with pytest.raises(ValueError):
        simulate_batch([stage(1, 1)], FREE, [], window=1, training=True)
    with pytest.raises(ValueError):
        simulate_batch([stage(1, 1)], FREE, [1], window=0, training=True)


def test_each_node_pays_for_its_own_w5500() -> None:
    """A node's sends and receives cost what its link says, not its neighbour's."""
    stages = [stage(1.0, 1.0), stage(1.0, 1.0, loss=0.1)]
    slow = LinearLink(per_frame=0.01, per_byte=1e-4)
    batch = simulate_batch(stages, [slow, FREE], [2, 2], window=2, training=True)
    assert batch.nodes[0].comm_s > 0
    assert batch.nodes[1].comm_s == 0
    with pytest.raises(ValueError, match="one link per stage"):
        simulate_batch(stages, [slow], [1], window=1, training=True)
