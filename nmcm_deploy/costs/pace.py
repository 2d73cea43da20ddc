"""Pace tables for sim nodes (``spec.sim.pace: model``): each node's modelled seconds per piece of
work and per frame, which the node then takes (firmware/apps/node/pace.h reads the table).

With every sim node paced, a sim run's wall time plays out the modelled MCUs' schedule frame by
frame, so comparing it with `estimate` checks the schedule simulation (schedule.py) and the
coordinator against each other. The figures are the cost model's (model.py); the table states
them per call and per sample, which is exact because every feature of a call is linear in its
micro-batch's samples (features.py).
"""

from __future__ import annotations

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


def _linear(seconds_at: list[float]) -> tuple[float, float]:
    """(per call, per sample) of a cost known at 1 and 2 samples."""
    one, two = seconds_at
    per_sample = two - one
    return max(0.0, one - per_sample), max(0.0, per_sample)


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
            fwd = _linear([sec * model.forward(i, n) for n in (1, 2)])
            bwd = _linear([sec * model.backward(i, n) for n in (1, 2)])
            rows.append(f"forward {i} {fwd[0]:.9e} {fwd[1]:.9e}")
            rows.append(f"backward {i} {bwd[0]:.9e} {bwd[1]:.9e}")
        loss = (
            _linear([sec * model.loss(n) for n in (1, 2)]) if k == len(plan.stages) - 1 else (0, 0)
        )
        rows.append(f"loss {loss[0]:.9e} {loss[1]:.9e}")
        rows.append(f"step {sec * model.step(momentum, decay):.9e}")
        # W5500: SPI per frame (the register traffic) and per byte, each way; then the wire.
        rows.append(f"send {link.overhead_bytes * per_byte:.9e} {per_byte:.9e}")
        rows.append(f"receive {link.overhead_bytes * per_byte:.9e} {per_byte:.9e}")
        rows.append(f"wire {ETHERNET_BPS:.0f} {TCP_SEGMENT} {SEGMENT_OVERHEAD}")
        tables.append("\n".join(rows) + "\n")
    return tables
