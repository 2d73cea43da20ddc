"""`nmcm build FILE`: the firmware image of every node, content-addressed."""

from __future__ import annotations

from pathlib import Path

import typer

from nmcm_deploy import terminal
from nmcm_deploy.cli.options import OutputFormat, output_option, target_option


def register(app: typer.Typer) -> None:
    app.command(
        "build",
        help=(
            "Build the firmware image of every node (unchanged inputs are not rebuilt) and report "
            "its flash and SRAM against the MCU's capacity.\n\n"
            "Example: nmcm build manifests/quickstart.yaml -o json"
        ),
    )(build)


def build(
    file: Path = typer.Argument(..., help="Manifest file.", show_default=False),
    target: str | None = target_option(),
    output: OutputFormat = output_option(),
) -> None:
    from nmcm_deploy.build.host import build_sim_node
    from nmcm_deploy.compiler.cluster import write_export
    from nmcm_deploy.reconcile.cluster import prepare

    prepared = prepare(file, target)
    write_export(prepared.cluster, prepared.nodes_dir)
    rows = []
    for desired, stage in zip(prepared.desired.nodes, prepared.cluster.stages, strict=True):
        image = build_sim_node(prepared.nodes_dir / desired.name, desired.firmware_sha256)
        fit = stage.plan.fit
        rows.append(
            {
                "name": desired.name,
                "mcu": desired.mcu,
                "stage": desired.stage,
                "target": prepared.target,
                "image": str(image),
                "firmware_sha256": desired.firmware_sha256,
                # In sim the figures are the compiler's prediction for the MCU (the arena plus
                # the firmware's reserve, the blob plus code); ELF builds report the linker's.
                "sizes_from": "prediction",
                "flash_bytes": fit.flash_bytes,
                "flash_capacity": fit.flash_capacity,
                "sram_bytes": fit.sram_bytes,
                "sram_capacity": fit.sram_capacity,
            }
        )
    if output is OutputFormat.json:
        terminal.emit_json({"cluster": prepared.cluster.name, "nodes": rows})
        return
    hb = terminal.human_bytes
    terminal.table(
        f"{prepared.cluster.name}: {len(rows)} image(s) ({prepared.target})",
        ["node", "MCU", "stage", "flash", "SRAM", "image"],
        [
            (
                r["name"],
                r["mcu"],
                r["stage"],
                f"{hb(int(str(r['flash_bytes'])))} / {hb(int(str(r['flash_capacity'])))}",
                f"{hb(int(str(r['sram_bytes'])))} / {hb(int(str(r['sram_capacity'])))}",
                r["image"],
            )
            for r in rows
        ],
    )
