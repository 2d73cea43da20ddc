"""An event simulation of the schedules the coordinator runs (coordinator/job.py), over modelled
times: how long a batch takes and what each node spends on compute, on its link and idle.

What is simulated is what the coordinator and the node runtime do, frame by frame:

- a batch opens with BATCH_BEGIN to every node (each acknowledges), and a training batch closes
  with STEP to every node (each applies its optimizer step, then acknowledges);
- the coordinator keeps at most ``window`` micro-batches in flight (1 for the sequential schedule;
  the nodes' slots for the pipelined one, GPipe's fill and drain flushed at every batch): it sends
  a micro-batch's INPUTS to stage 0 and its LABELS to the last stage, and the micro-batch is done
  when stage 0 has acknowledged its INPUTS (after its backward; in evaluation after its forward)
  and the last stage has sent its METRICS;
- a node is one thread: it takes the frames that have arrived in the order they arrived, and
  while it computes or moves a frame through its W5500 it does nothing else. Forward on stage k
  sends ACTIVATIONS to stage k+1; the last stage computes the loss and, in training, its backward
  at once; backward on stage k sends GRADIENTS to stage k-1.

Nothing here knows about MCUs: the per-stage times and the link come from the cost model
(model.py). Pure Python, deterministic.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from nmcm_deploy.protocol import CRC_SIZE, HEADER_SIZE

TENSOR_HEAD = 8  # samples, reserved, features: before a tensor's floats (docs/protocol.md)
CONTROL_PAYLOAD = 16  # a small control message's payload (BATCH_BEGIN, STEP, ACK, METRICS)


def frame_bytes(payload: int) -> int:
    """A frame's bytes on the wire: header, payload, CRC-32 (docs/protocol.md)."""
    return HEADER_SIZE + payload + CRC_SIZE


class Link(Protocol):
    """What moving one frame costs: the seconds the sending node is busy, the seconds the frame
    then travels, and the seconds the receiving node is busy taking it in."""

    def send_s(self, frame: int) -> float: ...

    def wire_s(self, frame: int) -> float: ...

    def receive_s(self, frame: int) -> float: ...


@dataclass(frozen=True)
class StageTimes:
    """Modelled compute seconds of one stage: per micro-batch of ``n`` samples, and per step."""

    forward_s: Callable[[int], float]
    backward_s: Callable[[int], float]
    loss_s: Callable[[int], float]  # the last stage's loss and seed; never called elsewhere
    step_s: float
    input_floats: int  # per sample: what arrives (INPUTS on stage 0, else ACTIVATIONS)
    output_floats: int  # per sample: what leaves downstream (or into the loss)


@dataclass
class NodeTime:
    """Seconds one node spent, by kind."""

    compute_s: float = 0.0
    comm_s: float = 0.0
    idle_s: float = 0.0

    def add(self, other: NodeTime, times: int = 1) -> None:
        self.compute_s += other.compute_s * times
        self.comm_s += other.comm_s * times
        self.idle_s += other.idle_s * times


@dataclass
class BatchTime:
    """One batch: its duration and what each node spent in it."""

    duration_s: float
    nodes: list[NodeTime] = field(default_factory=list)


@dataclass(order=True)
class _Task:
    ready: float
    seq: int
    kind: str = field(compare=False)  # "forward" | "backward"
    micro_batch: int = field(compare=False)


def simulate_batch(
    stages: Sequence[StageTimes],
    links: Link | Sequence[Link],
    sizes: Sequence[int],
    *,
    window: int,
    training: bool,
) -> BatchTime:
    """One batch of micro-batches of ``sizes`` samples through ``stages`` (stage 0 first).
    ``links``: one for every node (what its W5500 costs it), or one for them all."""
    if not stages or not sizes or window < 1:
        raise ValueError("a batch needs a stage, a micro-batch and a window of at least 1")
    per_node = list(links) if isinstance(links, Sequence) else [links] * len(stages)
    if len(per_node) != len(stages):
        raise ValueError("one link per stage")
    wire = per_node[0].wire_s
    k_last = len(stages) - 1
    nodes = [NodeTime() for _ in stages]
    free = [0.0] * len(stages)
    queues: list[list[_Task]] = [[] for _ in stages]
    seq = 0

    def post(node: int, kind: str, m: int, ready: float) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(queues[node], _Task(ready, seq, kind, m))

    def busy(node: int, start: float, compute: float, comm: float) -> float:
        nodes[node].compute_s += compute
        nodes[node].comm_s += comm
        free[node] = start + compute + comm
        return free[node]

    control = frame_bytes(CONTROL_PAYLOAD)

    def control_round(sent: float, work: Callable[[int], float]) -> float:
        """A control frame sent to every node at ``sent``, each answering with an ACK after
        ``work``; returns when the last ACK is in."""
        end = sent
        for k, link in enumerate(per_node):
            arrive = max(free[k], sent + wire(control))
            comm = link.receive_s(control) + link.send_s(control)
            done = busy(k, arrive, work(k), comm)
            end = max(end, done + wire(control))
        return end

    t0 = control_round(0.0, lambda k: 0.0)
    pending = list(range(len(sizes)))
    acked: set[int] = set()
    reported: set[int] = set()
    in_flight = 0
    last_done = t0

    def inject(now: float) -> None:
        nonlocal in_flight
        while pending and in_flight < window:
            m = pending.pop(0)
            in_flight += 1
            post(0, "forward", m, now + wire(tensor_frame(0, sizes[m], inputs=True)))

    def tensor_frame(k: int, n: int, *, inputs: bool) -> int:
        floats = stages[k].input_floats if inputs else stages[k].output_floats
        return frame_bytes(TENSOR_HEAD + 4 * n * floats)

    def labels_frame(n: int) -> int:
        return frame_bytes(4 + 4 * n)

    def finished(m: int, now: float) -> None:
        nonlocal in_flight, last_done
        if m in acked and m in reported:
            in_flight -= 1
            last_done = max(last_done, now)
            inject(now)

    inject(t0)
    while any(queues):
        # The node that can start a task earliest goes next (a node takes its frames in order).
        k = min(
            (k for k in range(len(stages)) if queues[k]),
            key=lambda k: (max(free[k], queues[k][0].ready), k),
        )
        task = heapq.heappop(queues[k])
        start = max(free[k], task.ready)
        n = sizes[task.micro_batch]
        m = task.micro_batch
        stage, link = stages[k], per_node[k]
        if task.kind == "forward" and k == k_last:
            # Activations (or INPUTS) and LABELS in, forward, the loss; in training the backward
            # and GRADIENTS upstream at once (batch.cpp finish_last); then METRICS (and, as the
            # only stage, the ACK of the INPUTS).
            comm = link.receive_s(tensor_frame(k, n, inputs=True)) + link.receive_s(labels_frame(n))
            compute = stage.forward_s(n) + stage.loss_s(n)
            if training:
                compute += stage.backward_s(n)
                if k > 0:
                    grads = tensor_frame(k, n, inputs=True)
                    comm += link.send_s(grads)
                    post(k - 1, "backward", m, start + compute + comm + wire(grads))
            comm += link.send_s(control) * (2 if k == 0 else 1)
            done = busy(k, start, compute, comm)
            reported.add(m)
            if k == 0:
                acked.add(m)
            finished(m, done + wire(control))
        elif task.kind == "forward":
            out = tensor_frame(k, n, inputs=False)
            comm = link.receive_s(tensor_frame(k, n, inputs=True)) + link.send_s(out)
            compute = stage.forward_s(n)
            post(k + 1, "forward", m, start + compute + comm + wire(out))
            if k == 0 and not training:
                comm += link.send_s(control)  # evaluation: stage 0 acknowledges after its forward
            done = busy(k, start, compute, comm)
            if k == 0 and not training:
                acked.add(m)
                finished(m, done + wire(control))
        else:
            comm = link.receive_s(tensor_frame(k, n, inputs=False))
            compute = stage.backward_s(n)
            comm += link.send_s(tensor_frame(k, n, inputs=True) if k > 0 else control)
            done = busy(k, start, compute, comm)
            if k > 0:
                post(k - 1, "backward", m, done + wire(tensor_frame(k, n, inputs=True)))
            else:
                acked.add(m)
                finished(m, done + wire(control))

    end = control_round(last_done, lambda k: stages[k].step_s) if training else last_done
    for node in nodes:
        node.idle_s = max(0.0, end - node.compute_s - node.comm_s)
    return BatchTime(end, nodes)
