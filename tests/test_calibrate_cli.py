"""`nmcm calibrate`: writes weights `estimate` can load, and re-fitting the shipped kernels gives
the shipped weights (a kernel changed without `make calibrate` fails here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from nmcm_deploy.costs import coefficients as coef
from tests.conftest import ARM_TOOLS, require_tools, run_nmcm


def test_calibration_reproduces_the_shipped_weights(tmp_path: Path) -> None:
    require_tools(*ARM_TOOLS)
    env = {"NMCM_STATE_DIR": str(tmp_path / "state")}
    result = run_nmcm("calibrate", "--target", "qemu", "--core", "cortex-m4", env=env)
    assert result.code == 0, result.output
    written = coef.load(tmp_path / "state" / "costs" / "cortex-m4.yaml")  # the default place
    shipped = coef.shipped("cortex-m4")
    assert written.source.startswith("qemu instructions (mps2-an386")
    for kind, directions in shipped.layers.items():
        for direction, weights in directions.items():
            assert written.layer(kind, direction) == pytest.approx(weights, rel=1e-6), (
                f"{kind} {direction}: the kernels changed since the shipped fit; "
                "run `make calibrate`"
            )
    assert written.loss == pytest.approx(shipped.loss, rel=1e-6)
    assert written.step == pytest.approx(shipped.step, rel=1e-6)
    # estimate now takes this machine's calibration (same weights, so the same figures).
    estimate = run_nmcm("estimate", "manifests/quickstart.yaml", "-o", "json", env=env)
    assert estimate.code == 0, estimate.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "board"], "unknown calibration target 'board'"),
        (["--target", "hardware"], "--manifest FILE and --node NAME"),
        (
            ["--target", "hardware", "--manifest", "manifests/quickstart.yaml", "--node", "f999"],
            "has no node 'f999'",
        ),
        (["--target", "qemu", "--core", "cortex-m0"], "unknown core 'cortex-m0'"),
    ],
)
def test_bad_calibration_arguments_are_clear_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = run_nmcm("calibrate", *args, env={"NMCM_STATE_DIR": str(tmp_path)})
    assert result.code == 1
    assert message in result.output and "Traceback" not in result.output
