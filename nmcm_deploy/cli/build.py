"""`nmcm build FILE`: the firmware image of every node, content-addressed.

`sim` builds the host executables (build/host.py) and reports the compiler's prediction of what
each node would take on its MCU. `hardware` cross-builds each node's board image (build/arm.py)
and reports flash and SRAM read from the ELF, per memory region, against the MCU, next to the
prediction `validate` uses; it exits 1 if an image does not fit its MCU.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from nmcm_deploy import terminal
from nmcm_deploy.cli.options import OutputFormat, output_option, target_option

if TYPE_CHECKING:
    from nmcm_deploy.targets.base import Prepared


def register(app: typer.Typer) -> None:
    app.command(
        "build",
        help=(
            "Build the firmware image of every node (unchanged inputs are not rebuilt) and report "
            "its flash and SRAM against the MCU's capacity: predicted in sim, read from the ELF "
            "for hardware (exit 1 if an image does not fit).\n\n"
            "Example: nmcm build manifests/quickstart.yaml --target hardware -o json"
        ),
    )(build)


def buildable_targets() -> tuple[str, ...]:
    """`sim` and `hardware` always; `qemu` once the QEMU node application is in the firmware tree
    (build/arm.py: APPS and TARGET_APPS name it)."""
    from nmcm_deploy.build.arm import TARGET_APPS, app_available

    targets = ["sim", "hardware"]
    if "qemu" in TARGET_APPS and app_available(TARGET_APPS["qemu"]):
        targets.append("qemu")
    return tuple(targets)


def build(
    file: Path = typer.Argument(..., help="Manifest file.", show_default=False),
    target: str | None = target_option(),
    output: OutputFormat = output_option(),
) -> None:
    from nmcm_deploy.compiler.cluster import write_export
    from nmcm_deploy.reconcile.cluster import prepare

    prepared = prepare(file, target, buildable_targets())
    write_export(prepared.cluster, prepared.nodes_dir)
    if prepared.target == "sim":
        rows = _sim_rows(prepared)
    else:
        rows = _arm_rows(prepared, quiet=output is OutputFormat.json)
    fits = all(bool(r.get("fits", True)) for r in rows)
    if output is OutputFormat.json:
        terminal.emit_json(
            {"cluster": prepared.cluster.name, "target": prepared.target, "nodes": rows}
        )
    elif prepared.target == "sim":
        _sim_table(prepared.cluster.name, prepared.target, rows)
    else:
        _arm_report(prepared.cluster.name, prepared.target, rows)
    for r in rows:
        if not r.get("fits", True):
            terminal.error(f"{r['name']} ({r['mcu']}) does not fit: {r['shortfall']}")
        elif r.get("prediction_holds") is False:
            # A framework matter, not the user's: the profile's runtime reserve is too small.
            terminal.info(
                f"warning: {r['name']}: the image needs more than `validate` predicts "
                f"(flash slack {r['flash_prediction_slack']} B, SRAM slack "
                f"{r['sram_prediction_slack']} B): the MCU profile's runtime_reserve is too small"
            )
    if not fits:
        raise typer.Exit(1)


def _sim_rows(prepared: Prepared) -> list[dict[str, Any]]:
    from nmcm_deploy.build.host import build_sim_node

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
    return rows


def _arm_rows(prepared: Prepared, *, quiet: bool) -> list[dict[str, Any]]:
    from nmcm_deploy.build.arm import TARGET_APPS, build_arm_node, stage_key, target_mcu
    from nmcm_deploy.build.mapfile import module_sizes

    app = TARGET_APPS[prepared.target]
    rows = []
    for desired, stage in zip(prepared.desired.nodes, prepared.cluster.stages, strict=True):
        node = stage.plan.node
        mcu_name = target_mcu(node.mcu, prepared.target)
        key = stage_key(stage, prepared.target, app)
        if not quiet:
            terminal.info(f"building {desired.name} ({mcu_name}, stage {desired.stage})")
        image = build_arm_node(
            prepared.nodes_dir / desired.name,
            mcu_name,
            key,
            app=app,
            board=node.board if prepared.target == "hardware" else None,
            w5500=node.w5500 if prepared.target == "hardware" else None,
        )
        sizes = image.sizes
        fit = stage.plan.fit  # the compiler's prediction, what `validate` checks
        rows.append(
            {
                "name": desired.name,
                "mcu": desired.mcu,
                "board": image.board,
                "built_for": image.mcu,  # NMCM_MCU: the MCU, or QEMU's board standing in for it
                "stage": desired.stage,
                "layers": [stage.plan.first, stage.plan.last],
                "target": prepared.target,
                "image": str(image.elf),
                "bin": str(image.bin),
                "hex": str(image.hex),
                "map": str(image.map),
                "firmware_sha256": key,
                "rebuilt": image.rebuilt,
                "sizes_from": "elf",
                "fits": sizes.fits,
                "flash_bytes": sizes.flash_bytes,
                "flash_capacity": sizes.flash_capacity,
                "sram_bytes": sizes.sram_bytes,
                "sram_capacity": sizes.sram_capacity,
                # sram_bytes is the arena's region (the one the capacity and the prediction are
                # about); the other regions (the H7A3's DTCM) are in `regions`.
                "sram_region": sizes.sram_region,
                "sram_total_bytes": sizes.sram_total_bytes,
                "blob_bytes": sizes.blob_bytes,
                "code_bytes": sizes.code_bytes,
                "arena_bytes": stage.plan.memory.arena_bytes,
                "regions": [r.as_dict() for r in sizes.regions],
                # The prediction is arena + the MCU's runtime reserve (SRAM) and blob + code
                # reserve (flash); it holds when the ELF needs no more than it. It is about the
                # MCU: a QEMU image has other memories and is not judged by it (null).
                "predicted_flash_bytes": fit.flash_bytes,
                "predicted_sram_bytes": fit.sram_bytes,
                "flash_prediction_slack": fit.flash_bytes - sizes.flash_bytes,
                "sram_prediction_slack": fit.sram_bytes - sizes.sram_bytes,
                "prediction_holds": (
                    sizes.flash_bytes <= fit.flash_bytes and sizes.sram_bytes <= fit.sram_bytes
                )
                if prepared.target == "hardware"
                else None,
                "shortfall": sizes.shortfall(),
                # The worst stack depth from the compiler's call graph, beside what the image
                # reserves (nmcm_deploy/build/stack.py).
                "stack": image.stack_dict(),
                # Where the flash and SRAM go, per module, from the linker's map (build/mapfile.py):
                # all but the stack and the arena.
                "modules": [m.as_dict() for m in module_sizes(image.map)],
                "modules_from": "linker map",
            }
        )
    return rows


def _sim_table(cluster: str, target: str, rows: list[dict[str, Any]]) -> None:
    hb = terminal.human_bytes
    terminal.table(
        f"{cluster}: {len(rows)} image(s) ({target})",
        ["node", "MCU", "stage", "flash", "SRAM", "image"],
        [
            (
                r["name"],
                r["mcu"],
                r["stage"],
                f"{hb(r['flash_bytes'])} / {hb(r['flash_capacity'])}",
                f"{hb(r['sram_bytes'])} / {hb(r['sram_capacity'])}",
                r["image"],
            )
            for r in rows
        ],
    )


def _arm_report(cluster: str, target: str, rows: list[dict[str, Any]]) -> None:
    hb = terminal.human_bytes

    def other_sram(r: dict[str, Any]) -> str:
        return ", ".join(
            f"{g['name']} {hb(g['used_bytes'])} / {hb(g['capacity'])}"
            for g in r["regions"]
            if g["kind"] == "sram" and g["name"] != r["sram_region"]
        )

    terminal.table(
        f"{cluster}: {len(rows)} image(s) ({target}, sizes from the ELF)",
        ["node", "MCU", "stage", "flash (blob)", "SRAM", "other SRAM", "predicted", "fits"],
        [
            (
                r["name"],
                r["mcu"],
                r["stage"],
                f"{hb(r['flash_bytes'])} / {hb(r['flash_capacity'])} ({hb(r['blob_bytes'])})",
                f"{r['sram_region']} {hb(r['sram_bytes'])} / {hb(r['sram_capacity'])}",
                other_sram(r) or "-",
                f"{hb(r['predicted_flash_bytes'])}, {hb(r['predicted_sram_bytes'])}",
                "yes" if r["fits"] else "NO",
            )
            for r in rows
        ],
    )
    _module_table(rows)
    for r in rows:
        cached = "" if r["rebuilt"] else " (cached)"
        terminal.out().print(f"{r['name']}: {r['image']}{cached}", markup=False, highlight=False)
        stack = r.get("stack")
        if stack:
            notes = [
                f"{len(stack[k])} {what}"
                for k, what in (
                    ("indirect_calls", "indirect call sites bounded"),
                    ("recursion", "recursive functions"),
                    ("unknown_functions", "functions without a figure"),
                )
                if stack[k]
            ]
            terminal.out().print(
                f"  stack: worst path {hb(stack['worst_bytes'])} of {hb(stack['reserved_bytes'])} "
                f"reserved, margin {hb(stack['margin_bytes'])} (gcc call graph"
                + (f"; {', '.join(notes)}" if notes else "")
                + ")",
                markup=False,
                highlight=False,
            )


def _module_table(rows: list[dict[str, Any]]) -> None:
    """Flash and SRAM per module and node, from the linker maps: where the bytes go."""
    hb = terminal.human_bytes
    modules: list[str] = []
    for r in rows:
        modules += [m["module"] for m in r["modules"] if m["module"] not in modules]
    sizes = {r["name"]: {m["module"]: m for m in r["modules"]} for r in rows}

    def cell(node: str, module: str) -> str:
        m = sizes[node].get(module)
        if m is None:
            return "-"
        return (
            f"{hb(m['flash_bytes'])} / {hb(m['sram_bytes'])}"
            if m["sram_bytes"]
            else hb(m["flash_bytes"])
        )

    terminal.table(
        "flash / SRAM by module (linker map; the stack and the arena apart)",
        ["module", *(r["name"] for r in rows)],
        [(module, *(cell(r["name"], module) for r in rows)) for module in modules],
    )
