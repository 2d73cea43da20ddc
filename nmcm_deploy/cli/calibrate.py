"""`nmcm calibrate --target qemu|hardware`: measure the shipped kernels and fit the cost model's
weights (nmcm_deploy/costs/calibrate.py): under QEMU in instructions, one file per core build; on
a board in DWT cycles, one file per MCU, which then times that MCU (docs/bring-up.md)."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from nmcm_deploy import terminal
from nmcm_deploy.cli.options import OutputFormat, output_option
from nmcm_deploy.errors import NmcmError

TARGETS = ("qemu", "hardware")


def register(app: typer.Typer) -> None:
    app.command(
        "calibrate",
        help=(
            "Measure the layer kernels over a sweep of shapes and fit the cost model's weights "
            "(`nmcm estimate` uses them). --target qemu counts instructions under QEMU, one "
            "image per core. --target hardware flashes a calibration image to the board of a "
            "manifest's --node through its probe and reads its DWT cycles back: that MCU's "
            "weights in cycles, which then time it. The weights go to the state folder "
            "(.nmcm/costs/), where they take precedence over the ones nmcm ships, or to --out."
            "\n\nExamples: nmcm calibrate --target qemu\n\n"
            "nmcm calibrate --target hardware --manifest cluster.yaml --node f413"
        ),
    )(calibrate)


def calibrate(
    target: str = typer.Option(
        ..., "--target", help="qemu: instructions under QEMU; hardware: DWT cycles on a board."
    ),
    core: list[str] = typer.Option(
        [], "--core", help="qemu: cortex-m4 and/or cortex-m7 (default: both)."
    ),
    manifest: Path = typer.Option(
        None, "--manifest", help="hardware: the manifest whose --node's board is measured."
    ),
    node: str = typer.Option(
        "", "--node", help="hardware: the node (its MCU, board, probe and pack) to measure on."
    ),
    out: Path = typer.Option(
        None,
        "--out",
        help="Folder to write <core>.yaml (or <mcu>.yaml) into (default: .nmcm/costs/).",
    ),
    output: OutputFormat = output_option(),
) -> None:
    if target not in TARGETS:
        raise NmcmError(f"unknown calibration target {target!r}; choose {', '.join(TARGETS)}")
    if target == "hardware":
        _calibrate_board(manifest, node, out, output)
    else:
        _calibrate_qemu(core, out, output)


def _calibrate_qemu(core: list[str], out: Path | None, output: OutputFormat) -> None:
    from nmcm_deploy.costs import coefficients as coef
    from nmcm_deploy.costs.calibrate import calibrate_qemu
    from nmcm_deploy.costs.measure import CORES

    cores = core or list(CORES)
    unknown = [c for c in cores if c not in CORES]
    if unknown:
        raise NmcmError(f"unknown core {unknown[0]!r}; choose {', '.join(CORES)}")
    written = []
    for name in cores:
        started = time.monotonic()
        if output is OutputFormat.text:
            terminal.info(f"{name}: measuring the calibration suite under QEMU ...")
        result = calibrate_qemu(name)
        path = (out / f"{name}.yaml") if out else coef.calibrated_path(name)
        coef.dump(
            result,
            path,
            header=[
                f"Cost model weights for {name} builds: instructions per feature",
                "(nmcm_deploy/costs/features.py). Written by `nmcm calibrate --target qemu`;",
                "regenerate with `make calibrate`.",
            ],
        )
        worst = max(q["max_relative_error"] for q in result.quality.values())
        written.append(
            {
                "core": name,
                "path": str(path),
                "source": result.source,
                "max_relative_error": worst,
                "seconds": round(time.monotonic() - started, 1),
            }
        )
        if output is OutputFormat.text:
            terminal.success(
                f"{name}: weights written to {path} ({time.monotonic() - started:.0f} s); "
                f"largest error on the fit suite {worst:.1%}"
            )
    if output is OutputFormat.json:
        terminal.emit_json({"format_version": 1, "target": "qemu", "cores": written})


def _calibrate_board(
    manifest: Path | None, node: str, out: Path | None, output: OutputFormat
) -> None:
    from nmcm_deploy.costs import coefficients as coef
    from nmcm_deploy.costs.calibrate import calibrate_board
    from nmcm_deploy.costs.model import board_of
    from nmcm_deploy.flash.packs import resolve_pack
    from nmcm_deploy.flash.pyocd_session import (
        DEFAULT_CONNECT_MODE,
        DEFAULT_FREQUENCY,
        FlashRequest,
    )
    from nmcm_deploy.manifest import load_manifest
    from nmcm_deploy.profiles import mcu as mcu_profile

    if manifest is None or not node:
        raise NmcmError(
            "--target hardware needs --manifest FILE and --node NAME: the board to measure on",
            hint="nmcm calibrate --target hardware --manifest cluster.yaml --node f413",
        )
    loaded = load_manifest(manifest, fit=False)
    names = [n.name for n in loaded.nodes]
    if node not in names:
        raise NmcmError(f"{manifest} has no node {node!r}; its nodes: {', '.join(names)}")
    index = names.index(node)
    spec = loaded.nodes[index]
    profile = mcu_profile(spec.mcu)
    board = board_of(spec)
    pack = resolve_pack(spec, profile, f"spec.nodes[{index}]")  # before anything is built
    probe = spec.probe

    def request(image: Path) -> FlashRequest:
        return FlashRequest(
            node=node,
            uid=probe.uid if probe is not None else None,
            target=profile.pyocd_target,
            pack=pack.path,
            image=image,
            frequency=probe.frequency if probe and probe.frequency else DEFAULT_FREQUENCY,
            connect_mode=(
                probe.connect_mode if probe and probe.connect_mode else DEFAULT_CONNECT_MODE
            ),
        )

    def step(message: str) -> None:
        if output is OutputFormat.text:
            terminal.info(f"{node}: {message}")

    started = time.monotonic()
    step(f"building the calibration image for {spec.mcu} on {board}")
    result = calibrate_board(spec.mcu, board, request, step=step)
    path = (out / f"{spec.mcu}.yaml") if out else coef.board_path(spec.mcu)
    coef.dump(
        result,
        path,
        header=[
            f"Cost model weights for {spec.mcu} on {board}: DWT cycles per feature",
            "(nmcm_deploy/costs/features.py). Written by `nmcm calibrate --target hardware`;",
            "they time this MCU in place of its core's instruction weights.",
        ],
    )
    worst = max(q["max_relative_error"] for q in result.quality.values())
    seconds = round(time.monotonic() - started, 1)
    if output is OutputFormat.json:
        terminal.emit_json(
            {
                "format_version": 1,
                "target": "hardware",
                "mcu": spec.mcu,
                "board": board,
                "path": str(path),
                "source": result.source,
                "max_relative_error": worst,
                "seconds": seconds,
            }
        )
    else:
        terminal.success(
            f"{spec.mcu}: cycle weights written to {path} ({seconds:.0f} s); largest error on "
            f"the fit suite {worst:.1%}"
        )
