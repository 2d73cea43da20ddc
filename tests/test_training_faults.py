"""A run that goes wrong says so: the first NaN or infinity stops the job with exit 1, naming the
node, epoch and batch where it appeared; a loss that grows by an order of magnitude is warned
about in the summary and in report.md."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cluster_helpers import write_manifest
from tests.conftest import run_nmcm

TWO_NODES = [("f413", 0, 3), ("h7a3", 4, 5)]


@pytest.mark.parametrize(("loss", "lr"), [("mse", 1e30), ("cross_entropy", 1e36)])
def test_a_non_finite_value_in_training_stops_the_job_where_it_appeared(
    tmp_path: Path, state_dir: Path, loss: str, lr: float
) -> None:
    manifest = write_manifest(tmp_path, name="blowup", stages=TWO_NODES, loss=loss, lr=lr)
    env = {"NMCM_STATE_DIR": str(state_dir)}
    result = run_nmcm("apply", manifest, "--out", tmp_path / "out", env=env)
    assert result.code == 1, result.output
    error = result.stderr
    assert "NON_FINITE" in error and ("NaN" in error or "infinity" in error), error
    assert "node 'f413'" in error or "node 'h7a3'" in error, error
    assert "(epoch 1, batch " in error and "Traceback" not in result.output
    job = json.loads((state_dir / "blowup" / "state.json").read_text())["job"]
    assert job["status"] == "failed" and "NON_FINITE" in job["error"]
    assert not (tmp_path / "out" / "model.pt").exists()
    assert run_nmcm("down", manifest, env=env).code == 0


def test_a_diverging_loss_is_warned_about(tmp_path: Path, state_dir: Path) -> None:
    manifest = write_manifest(tmp_path, name="diverge", stages=TWO_NODES, epochs=2, lr=1e9)
    env = {"NMCM_STATE_DIR": str(state_dir)}
    out = tmp_path / "out"
    result = run_nmcm("apply", manifest, "--out", out, env=env)
    assert result.code == 0, result.output
    assert "warning: the loss diverged" in result.stderr
    assert "**Warning:** the loss diverged" in (out / "report.md").read_text()
    warnings = json.loads((out / "metrics.json").read_text())["warnings"]
    assert len(warnings) == 1 and "learning rate" in warnings[0]
    assert run_nmcm("down", manifest, env=env).code == 0


def test_a_sound_run_has_no_warning(tmp_path: Path, state_dir: Path) -> None:
    manifest = write_manifest(tmp_path, name="sound", stages=TWO_NODES, epochs=2)
    env = {"NMCM_STATE_DIR": str(state_dir)}
    result = run_nmcm("apply", manifest, "--out", tmp_path / "out", env=env)
    assert result.code == 0, result.output
    assert "warning" not in result.stderr
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["warnings"] == []
    assert run_nmcm("down", manifest, env=env).code == 0
