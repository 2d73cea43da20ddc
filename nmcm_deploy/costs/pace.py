"""Pace tables for sim nodes (``spec.sim.pace: model``): each node's modelled seconds per piece of
work and per frame, which the node then takes (firmware/apps/node/pace.h reads the table).

With every sim node paced, a sim run's wall time plays out the modelled MCUs' schedule frame by
frame, so comparing it with `estimate` checks the schedule simulation (schedule.py) and the
coordinator against each other. The figures are the cost model's (model.py); the table states
them per call, per sample and per remainder of the samples mod 4, which is exact because every
feature of a call is linear in its micro-batch's samples but for the linear kernels' tiles of four
samples (features.py).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from nmcm_deploy.compiler.cluster import ClusterPlan
from nmcm_deploy.costs.links import ETHERNET_BPS, SEGMENT_OVERHEAD, TCP_SEGMENT
from nmcm_deploy.costs.model import (
    CoefficientsOf,
    current_coefficients,
    node_link,
    seconds_per_unit,
    stage_models,
)
from nmcm_deploy.manifest.model import TrainingSpec


def _work(instructions: Callable[[int], float], sec: float) -> str:
    """A piece of work's figures: seconds per call and per sample, then for 1, 2 and 3 samples
    mod 4. Every feature of a call is linear in its samples but for the linear kernels' tiles of
    four samples (features.py), so the cost is exactly call + sample·n + residue[n mod 4].
    ``instructions(n)`` is the model's count for n samples, ``sec`` the seconds of one."""

    def cost(n: int) -> float:
        return sec * instructions(n)

    per_sample = (cost(8) - cost(4)) / 4
    per_call = cost(4) - 4 * per_sample
    residues = [cost(r) - per_call - per_sample * r for r in (1, 2, 3)]
    # Non-negative weights make every figure non-negative; rounding may leave a -1e-20.
    return " ".join(f"{max(0.0, v):.12e}" for v in (per_call, per_sample, *residues))


def pace_tables(
    plan: ClusterPlan,
    training: TrainingSpec,
    scale: float,
    coefficients: CoefficientsOf = current_coefficients,
) -> list[str]:
    """One pace table per stage of ``plan``, stage 0 first (the text the node reads)."""
    momentum = training.optimizer.momentum != 0.0
    decay = training.optimizer.weight_decay != 0.0
    tables = []
    for k, (model, stage) in enumerate(
        zip(stage_models(plan, training, coefficients, timed=True), plan.stages, strict=True)
    ):
        sec = seconds_per_unit(stage.profile, model.weights)
        link = node_link(stage.node)
        per_byte = 8 / (link.sck_hz * link.efficiency)
        rows = [
            f"# nmcm pace table: stage {k} ({stage.node.name}, {stage.profile.name}), layers "
            f"{stage.first}..{stage.last}; modelled MCU seconds (docs/cost-model.md)",
            f"scale {scale!r}",
            f"layers {len(stage.layers)}",
        ]
        for i in range(len(stage.layers)):
            rows.append(f"forward {i} {_work(partial(model.forward, i), sec)}")
            rows.append(f"backward {i} {_work(partial(model.backward, i), sec)}")
        last = k == len(plan.stages) - 1
        rows.append(f"loss {_work(model.loss, sec) if last else '0 0'}")
        rows.append(f"step {sec * model.step(momentum, decay):.9e}")
        # W5500: SPI per frame (the register traffic) and per byte, each way; then the wire.
        rows.append(f"send {link.overhead_bytes * per_byte:.9e} {per_byte:.9e}")
        rows.append(f"receive {link.overhead_bytes * per_byte:.9e} {per_byte:.9e}")
        rows.append(f"wire {ETHERNET_BPS:.0f} {TCP_SEGMENT} {SEGMENT_OVERHEAD}")
        tables.append("\n".join(rows) + "\n")
    return tables
