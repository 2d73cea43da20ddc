"""`nmcm estimate FILE`: modelled training time on the MCUs, per node and per layer, before
anything is built (nmcm_deploy/costs/)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from nmcm_deploy import terminal
from nmcm_deploy.cli.options import OutputFormat, output_option

if TYPE_CHECKING:
    from nmcm_deploy.costs.planner import Candidate, Plan


def register(app: typer.Typer) -> None:
    app.command(
        "estimate",
        help=(
            "Model how long training takes on the MCUs: step and epoch time, and per node and "
            "layer the instructions, cycles, compute, link and idle time, SRAM and flash. "
            "Nothing is built or run; every figure comes from the cost model.\n\n"
            "Example: nmcm estimate manifests/quickstart.yaml"
        ),
    )(estimate)


def estimate(
    file: Path = typer.Argument(..., help="Manifest file.", show_default=False),
    output: OutputFormat = output_option(),
) -> None:
    from nmcm_deploy.compiler.cluster import build_model, plan_cluster
    from nmcm_deploy.costs import model, planner
    from nmcm_deploy.datasets import sample_counts
    from nmcm_deploy.errors import ModelError
    from nmcm_deploy.manifest import load_manifest

    manifest = load_manifest(file)
    _, ir = build_model(manifest)
    manifest = planner.resolve_manifest(manifest, ir)
    plan = plan_cluster(manifest, ir, planner.resolve)
    data = manifest.dataset
    train, test = sample_counts(data.name, data.npz, data.test_fraction)
    result = model.estimate(plan, manifest.training, train, test)
    misfits = [s for s in plan.stages if not s.fit.fits]
    try:
        best = planner.plan_stages(manifest, ir, train, test)
    except ModelError:
        best = None  # nothing fits these nodes: the misfits below say where

    if output is OutputFormat.json:
        doc = result.as_dict()
        doc["micro_batches_auto"] = manifest.training.micro_batches_auto
        if best is not None:
            doc["planner"] = {
                "stages_auto": manifest.stages_auto,
                "best": _candidate(best.best),
                "alternatives": [_candidate(c) for c in best.ranked[1:4]],
                "unused": list(best.unused),
                "exhaustive": best.exhaustive,
            }
        terminal.emit_json(doc)
    else:
        hb = terminal.human_bytes
        terminal.line(
            f"{manifest.name}: {result.schedule} schedule, {result.micro_batches} micro-batch(es)"
            f"{' (micro_batches: auto)' if manifest.training.micro_batches_auto else ''}; "
            f"a training step {result.step_s:.3f} s, an epoch {result.epoch_s:.2f} s "
            f"({train} training + {test} test samples) [model]"
        )
        terminal.table(
            "per node, per epoch [model]",
            ["node", "MCU", "stage", "layers", "compute", "link", "idle", "SRAM", "flash"],
            [
                (
                    n.name,
                    n.mcu,
                    n.stage,
                    f"{n.layers[0]}-{n.layers[1]}",
                    f"{n.compute_s:.2f} s",
                    f"{n.comm_s:.2f} s",
                    f"{n.idle_s:.2f} s",
                    f"{hb(s.fit.sram_bytes)} / {hb(s.fit.sram_capacity)}",
                    f"{hb(s.fit.flash_bytes)} / {hb(s.fit.flash_capacity)}",
                )
                for n, s in zip(result.nodes, plan.stages, strict=True)
            ],
        )
        terminal.table(
            "per layer, one training step [model]",
            ["node", "layer", "type", "fwd instr", "bwd instr", "fwd cycles", "bwd cycles"],
            [
                (
                    n.name,
                    c.index,
                    c.type,
                    f"{c.forward_instructions:,}",
                    f"{c.backward_instructions:,}",
                    f"{c.forward_cycles:,}",
                    f"{c.backward_cycles:,}",
                )
                for n in result.nodes
                for c in n.layer_costs
            ],
        )
        for s in plan.stages:
            cpi = s.profile.cycles_per_instruction
            terminal.line(
                f"{s.profile.name}: {cpi.value} cycles per instruction "
                f"(±{cpi.uncertainty:.0%}) at {s.profile.clock_hz / 1e6:.0f} MHz; "
                f"{cpi.source.split(':')[0]}"
            )
        if best is not None:
            _explain(best, result.epoch_s, manifest.stages_auto)
    for s in misfits:
        terminal.error(
            f"stage {s.index} on node {s.node.name} ({s.profile.name}) does not fit: "
            f"{s.fit.shortfall()}"
        )
    raise typer.Exit(1 if misfits else 0)


def _split(pipeline: Sequence[tuple[str, int, int]]) -> str:
    return " -> ".join(f"{node} [{first}-{last}]" for node, first, last in pipeline)


def _candidate(candidate: Candidate) -> dict[str, object]:
    return {
        "stages": [{"node": n, "layers": [a, b]} for n, a, b in candidate.pipeline],
        "epoch_s": candidate.epoch_s,
        "step_s": candidate.step_s,
        "bottleneck_stage": candidate.bottleneck,
    }


def _explain(plan: Plan, epoch_s: float, auto: bool) -> None:
    best = plan.best
    how = "every split ranked" if plan.exhaustive else f"{plan.searched} best of the search"
    if auto:
        terminal.line(
            f"stages: auto chose {_split(best.pipeline)} (bottleneck: stage {best.bottleneck}; "
            f"{how}) [model]"
        )
    else:
        ratio = epoch_s / best.epoch_s
        verdict = (
            "no split is faster" if ratio <= 1 + 1e-9 else f"its epoch is {ratio:.2f}x the best"
        )
        terminal.line(
            f"this split: {verdict}; the planner's best for these nodes is "
            f"{_split(best.pipeline)}, an epoch of {best.epoch_s:.2f} s ({how}) [model]"
        )
    for c in plan.ranked[1:4]:
        terminal.line(f"  next: {_split(c.pipeline)}, an epoch of {c.epoch_s:.2f} s")
    if plan.unused:
        terminal.line(
            f"  unused: {', '.join(plan.unused)} (using them would be slower under the model)"
        )
