"""The artifacts of a run are one set: whenever their writing stops (an error, a kill), a reader
of `--out` finds the previous set whole, never a mix of two runs; a failure names the path and
fails the job; metrics.json is strict JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from nmcm_deploy import artifacts
from nmcm_deploy.artifacts import (
    ARTIFACTS,
    ArtifactError,
    EpochSummary,
    NodeSummary,
    RunSummary,
    write_artifacts,
)
from tests.cluster_helpers import write_manifest
from tests.conftest import run_nmcm


def summary(run: str, test_accuracy: float | None = 0.5) -> RunSummary:
    node = NodeSummary("f413", "stm32f413zh", 0, (0, 5), 80, 1, 2, 3, 4, 0.1, 0.2, 0.3, 5, 6)
    return RunSummary(
        cluster=run,
        target="sim",
        schedule="pipelined",
        micro_batches=1,
        epochs=[EpochSummary(1, 0.5, 0.5, test_accuracy, 1.0)],
        wall_time_s=1.0,
        nodes=[node],
    )


def visible(out: Path) -> dict[str, str]:
    """Which run each artifact a reader opens comes from."""
    model = torch.load(out / "model.pt", weights_only=True)
    return {
        "model.pt": str(int(model["run"].item())),
        "metrics.json": json.loads((out / "metrics.json").read_text())["cluster"],
        "report.md": (out / "report.md").read_text().split("`")[1],
        "training.png": "png" if (out / "training.png").read_bytes()[:4] == b"\x89PNG" else "?",
    }


class Stop(BaseException):
    """Stands for a kill: nothing after it runs, no clean-up either."""


def failing_at(k: int, exc: BaseException, monkeypatch: pytest.MonkeyPatch) -> None:
    """The k-th step of writing the set (a file or a link) raises ``exc``."""
    calls = [0]

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def step(*args: Any) -> Any:
            calls[0] += 1
            if calls[0] == k:
                raise exc
            return fn(*args)

        return step

    for name in ("_write_file", "write_plot", "_link"):
        monkeypatch.setattr(artifacts, name, wrap(getattr(artifacts, name)))


# Steps: model.pt, metrics.json, report.md, training.png, the switch, then one link per name.
STEPS = range(1, 10)


@pytest.mark.parametrize("k", STEPS)
@pytest.mark.parametrize("how", ["error", "kill"])
def test_a_reader_sees_the_old_set_or_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k: int, how: str
) -> None:
    out = tmp_path / "out"
    write_artifacts(summary("1"), {"run": torch.tensor(1)}, out)
    assert visible(out) == {
        "model.pt": "1",
        "metrics.json": "1",
        "report.md": "1",
        "training.png": "png",
    }
    with monkeypatch.context() as patch:
        exc: BaseException = OSError(28, "No space left on device", str(out / "x"))
        failing_at(k, exc if how == "error" else Stop(), patch)
        with pytest.raises(ArtifactError if how == "error" else Stop):
            write_artifacts(summary("2"), {"run": torch.tensor(2)}, out)
    seen = visible(out)
    runs = {v for name, v in seen.items() if name != "training.png"}
    assert len(runs) == 1, seen  # never a mix of two runs
    if k <= 5:  # stopped before the switch: the old set
        assert runs == {"1"}
    if how == "error" and k <= 5:  # an error before the switch leaves nothing behind
        assert len([p for p in (out / ".artifacts").iterdir() if p.name != "current"]) == 1
    # The next run writes its set whole, and clears what a killed one left.
    write_artifacts(summary("3"), {"run": torch.tensor(3)}, out)
    assert set(visible(out).values()) == {"3", "png"}
    assert len(list((out / ".artifacts").iterdir())) == 2  # the set and `current`


def test_an_error_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ArtifactError) as caught:
        write_artifacts(summary("1"), {"run": torch.tensor(1)}, blocker / "out")
    assert str(blocker / "out") in caught.value.message


def test_metrics_are_strict_json_without_a_test_set(tmp_path: Path) -> None:
    write_artifacts(summary("1", test_accuracy=None), {"run": torch.tensor(1)}, tmp_path)

    def refuse(constant: str) -> None:
        raise AssertionError(constant)

    doc = json.loads((tmp_path / "metrics.json").read_text(), parse_constant=refuse)
    assert doc["epochs"][0]["test_accuracy"] is None
    assert all((tmp_path / name).is_file() for name in ARTIFACTS)


def test_apply_with_an_unwritable_out_fails_the_job_and_names_the_path(
    tmp_path: Path, state_dir: Path
) -> None:
    manifest = write_manifest(tmp_path, name="noout", stages=[("f413", 0, 5)])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    env = {"NMCM_STATE_DIR": str(state_dir)}
    result = run_nmcm("apply", manifest, "--out", blocker / "out", env=env)
    assert result.code == 1, result.output
    assert f"cannot write the artifacts: {blocker / 'out'}" in result.stderr
    assert "Traceback" not in result.output
    job = json.loads((state_dir / "noout" / "state.json").read_text())["job"]
    assert job["status"] == "failed" and str(blocker / "out") in job["error"]
    assert run_nmcm("down", manifest, env=env).code == 0


def test_an_unwritable_state_folder_is_a_clear_error(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, name="nostate", stages=[("f413", 0, 5)])
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = run_nmcm("apply", manifest, env={"NMCM_STATE_DIR": str(blocker / "state")})
    assert result.code == 1, result.output
    assert f"cannot write {blocker / 'state'}" in result.stderr
    assert "NMCM_STATE_DIR" in result.stderr and "Traceback" not in result.output
