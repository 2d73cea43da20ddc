"""`nmcm export FILE --out DIR`: per-stage blob, C++ header and memory plan for every node."""

from __future__ import annotations

from pathlib import Path

import typer

from nmcm_deploy import terminal
from nmcm_deploy.cli.options import OutputFormat, output_option
from nmcm_deploy.errors import NmcmError


def register(app: typer.Typer) -> None:
    app.command(
        "export",
        help=(
            "Compile the manifest's model into one blob, C++ header and memory plan per node.\n\n"
            "Example: nmcm export manifests/quickstart.yaml --out build/export"
        ),
    )(export)


def export(
    file: Path = typer.Argument(..., help="Manifest file.", show_default=False),
    out: Path = typer.Option(..., "--out", help="Directory to write into (one folder per node)."),
    target: str = typer.Option(
        None, "--target", help="sim | qemu | hardware (default: the manifest's spec.target)."
    ),
    output: OutputFormat = output_option(),
) -> None:
    from nmcm_deploy.compiler.cluster import compile_cluster, write_export
    from nmcm_deploy.costs import planner
    from nmcm_deploy.manifest import load_manifest

    manifest = planner.resolve_manifest(load_manifest(file))
    chosen = target or manifest.target
    if chosen not in ("sim", "qemu", "hardware"):
        raise NmcmError(f"unknown target {chosen!r}; choose sim, qemu or hardware")
    cluster = compile_cluster(manifest, chosen, planner.resolve)
    write_export(cluster, out)

    rows = []
    for s in cluster.stages:
        fit = s.plan.fit
        rows.append(
            {
                "stage": s.plan.index,
                "node": s.plan.node.name,
                "mcu": s.plan.node.mcu,
                "layers": [s.plan.first, s.plan.last],
                "parameters": s.plan.memory.parameters,
                "arena_bytes": s.plan.memory.arena_bytes,
                "blob_bytes": len(s.blob),
                "sram_bytes": fit.sram_bytes,
                "sram_capacity": fit.sram_capacity,
                "flash_bytes": fit.flash_bytes,
                "flash_capacity": fit.flash_capacity,
                "fits": fit.fits,
                "directory": str(out / s.plan.node.name),
            }
        )
    misfits = [s for s in cluster.stages if not s.plan.fit.fits]
    if output is OutputFormat.json:
        terminal.emit_json(
            {"cluster": cluster.name, "model_hash": cluster.model_hash.hex(), "stages": rows}
        )
    else:
        hb = terminal.human_bytes
        terminal.table(
            f"{cluster.name}: {len(rows)} stage(s) exported to {out}",
            ["stage", "node", "MCU", "layers", "params", "arena", "blob", "SRAM (pred.)", "fits"],
            [
                (
                    s.plan.index,
                    s.plan.node.name,
                    s.plan.node.mcu,
                    f"{s.plan.first}-{s.plan.last}",
                    s.plan.memory.parameters,
                    hb(s.plan.memory.arena_bytes),
                    hb(len(s.blob)),
                    f"{hb(s.plan.fit.sram_bytes)} / {hb(s.plan.fit.sram_capacity)}",
                    "yes" if s.plan.fit.fits else "NO",
                )
                for s in cluster.stages
            ],
        )
    for s in misfits:
        terminal.error(
            f"stage {s.plan.index} on node {s.plan.node.name} ({s.plan.node.mcu}) does not fit: "
            f"{s.plan.fit.shortfall()}"
        )
    raise typer.Exit(1 if misfits else 0)
