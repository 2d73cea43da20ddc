"""`nmcm estimate FILE`: modelled training time on the MCUs, per node and per layer, before
anything is built (nmcm_deploy/costs/)."""

from __future__ import annotations

from pathlib import Path

import typer

from nmcm_deploy import terminal
from nmcm_deploy.cli.options import OutputFormat, output_option


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
    from nmcm_deploy.costs import model
    from nmcm_deploy.datasets import load_dataset
    from nmcm_deploy.manifest import load_manifest

    manifest = load_manifest(file)
    _, ir = build_model(manifest)
    plan = plan_cluster(manifest, ir)
    data = load_dataset(
        name=manifest.dataset.name,
        npz=manifest.dataset.npz,
        input_shape=tuple(manifest.model.input),
        test_fraction=manifest.dataset.test_fraction,
        shuffle=manifest.training.shuffle,
        seed=manifest.training.seed,
    )
    result = model.estimate(plan, manifest.training, len(data.x_train), len(data.x_test))
    misfits = [s for s in plan.stages if not s.fit.fits]

    if output is OutputFormat.json:
        terminal.emit_json(result.as_dict())
    else:
        hb = terminal.human_bytes
        terminal.line(
            f"{manifest.name}: {result.schedule} schedule, {result.micro_batches} micro-batch(es); "
            f"a training step {result.step_s:.3f} s, an epoch {result.epoch_s:.2f} s "
            f"({len(data.x_train)} training + {len(data.x_test)} test samples) [model]"
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
    for s in misfits:
        terminal.error(
            f"stage {s.index} on node {s.node.name} ({s.profile.name}) does not fit: "
            f"{s.fit.shortfall()}"
        )
    raise typer.Exit(1 if misfits else 0)
