"""`stages: auto` over several nodes, end to end: validate accepts what the planner can place and
names what it cannot, estimate and export show the planner's split, and apply trains a model that
fits no single F413 on the split the planner chose, like PyTorch. The sample counts the planner
models an epoch with are the ones the dataset loader gives."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nmcm_deploy.compiler.cluster import build_model
from nmcm_deploy.costs import planner
from nmcm_deploy.datasets import load_dataset, sample_counts
from nmcm_deploy.manifest import load_manifest
from tests.cluster_helpers import digits_npz, torch_reference, write_manifest
from tests.conftest import Result, run_nmcm
from tests.engine_helpers import TRAIN_RTOL, rel_err
from tests.test_planner import WIDE_CNN


def nmcm(state: Path, *args: str | Path) -> Result:
    return run_nmcm(*args, env={"NMCM_STATE_DIR": str(state)})


def wide_two_f413(tmp_path: Path, npz: Path | None = None) -> Path:
    return write_manifest(
        tmp_path,
        name="auto-wide",
        stages=[("f413", 0, 0), ("f413b", 0, 0)],
        stages_auto=True,
        layers=WIDE_CNN,
        npz=npz,
        micro_batches=4,
        epochs=1,
    )


def test_validate_estimate_and_export_use_the_planners_split(tmp_path: Path) -> None:
    manifest = wide_two_f413(tmp_path)
    state = tmp_path / "state"
    assert nmcm(state, "validate", manifest).code == 0
    loaded = load_manifest(manifest)
    _, ir = build_model(loaded)
    chosen = planner.resolve(loaded, ir)
    assert len(chosen) == 2  # the model fits no single F413: the planner must split it
    estimate = nmcm(state, "estimate", manifest, "-o", "json")
    assert estimate.code == 0, estimate.output
    doc = json.loads(estimate.stdout)
    assert [(n["name"], *n["layers"]) for n in doc["nodes"]] == [tuple(s) for s in chosen]
    export = nmcm(state, "export", manifest, "--out", tmp_path / "export", "-o", "json")
    assert export.code == 0, export.output
    stages = json.loads(export.stdout)["stages"]
    assert [(s["node"], *s["layers"]) for s in stages] == [tuple(s) for s in chosen]
    planned = nmcm(state, "plan", manifest, "-o", "json")
    assert planned.code == 0, planned.output
    doc = json.loads(planned.stdout)
    assert doc["stages_auto"] is True and doc["unused_nodes"] == []
    assert [(s["node"], *s["layers"]) for s in doc["stages"]] == [tuple(s) for s in chosen]
    assert "the planner's split is" in nmcm(state, "plan", manifest).stdout


def test_validate_names_a_model_the_planner_cannot_place(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path,
        name="auto-huge",
        stages=[("f413", 0, 0), ("f413b", 0, 0)],
        stages_auto=True,
        layers=[{"type": "linear", "out_features": 50000}, {"type": "softmax"}],
        input_shape=[64],
    )
    result = nmcm(tmp_path / "state", "validate", manifest)
    assert result.code == 1
    assert "spec.stages" in result.output and "fits no node on its own" in result.output


def test_apply_trains_on_the_planners_split_like_pytorch(tmp_path: Path) -> None:
    npz = digits_npz(tmp_path / "digits.npz", train=96, test=32)
    manifest = wide_two_f413(tmp_path, npz)
    state, out = tmp_path / "state", tmp_path / "out"
    result = nmcm(state, "apply", manifest, "--out", out)
    try:
        assert result.code == 0, result.output
        metrics = json.loads((out / "metrics.json").read_text())
        assert len(metrics["nodes"]) == 2
        trained = torch.load(out / "model.pt", weights_only=True)
        reference = torch_reference(manifest)
        errors = {name: rel_err(trained[name], reference[name]) for name in reference}
        assert max(errors.values()) <= TRAIN_RTOL, errors
    finally:
        nmcm(state, "down", manifest)


@pytest.mark.parametrize("with_test", [True, False])
@pytest.mark.parametrize("fraction", [0.0, 0.2, 0.37])
def test_sample_counts_are_what_the_loader_gives(
    tmp_path: Path, with_test: bool, fraction: float
) -> None:
    path = digits_npz(tmp_path / "d.npz", train=101, test=23)
    if not with_test:
        data = dict(np.load(path))
        np.savez(path, x_train=data["x_train"], y_train=data["y_train"])
    for name, npz in (("sklearn-digits", None), (None, path)):
        loaded = load_dataset(
            name=name,
            npz=npz,
            input_shape=(1, 8, 8),
            test_fraction=fraction,
            shuffle=False,
            seed=0,
        )
        counts = sample_counts(name, npz, fraction)
        assert counts == (len(loaded.x_train), len(loaded.x_test))
