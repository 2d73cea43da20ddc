"""`nmcm calibrate --target qemu`: measure the shipped kernels and fit the cost model's weights
(nmcm_deploy/costs/calibrate.py), one file per core build."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from nmcm_deploy import terminal
from nmcm_deploy.cli.options import OutputFormat, output_option
from nmcm_deploy.errors import NmcmError

TARGETS = ("qemu",)


def register(app: typer.Typer) -> None:
    app.command(
        "calibrate",
        help=(
            "Measure the layer kernels over a sweep of shapes and fit the cost model's weights "
            "(`nmcm estimate` uses them). --target qemu counts instructions under QEMU, one "
            "image per core. The weights go to the state folder (.nmcm/costs/), where they take "
            "precedence over the ones nmcm ships, or to --out.\n\n"
            "Example: nmcm calibrate --target qemu"
        ),
    )(calibrate)


def calibrate(
    target: str = typer.Option(..., "--target", help="qemu: instruction counts under QEMU."),
    core: list[str] = typer.Option(
        [], "--core", help="cortex-m4 and/or cortex-m7 (default: both)."
    ),
    out: Path = typer.Option(
        None, "--out", help="Folder to write <core>.yaml into (default: .nmcm/costs/)."
    ),
    output: OutputFormat = output_option(),
) -> None:
    from nmcm_deploy.costs import coefficients as coef
    from nmcm_deploy.costs.calibrate import calibrate_qemu
    from nmcm_deploy.costs.measure import CORES

    if target not in TARGETS:
        raise NmcmError(
            f"unknown calibration target {target!r}; choose {', '.join(TARGETS)}",
            hint="on boards, the cost model's cycles per instruction are the MCU profile's",
        )
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
        terminal.emit_json({"format_version": 1, "target": target, "cores": written})
