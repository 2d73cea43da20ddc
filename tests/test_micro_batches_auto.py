"""`micro_batches: auto`: the planner picks the micro-batch count, from 1 to 16 (at most the batch
size), with the shortest modelled epoch among those whose placement fits, the same way it picks
the split. Validate promises what apply does: it accepts a model that only fits in enough
micro-batches and names the field when no count fits."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from nmcm_deploy.compiler.cluster import plan_pipeline
from nmcm_deploy.costs import model, planner
from nmcm_deploy.datasets import sample_counts
from nmcm_deploy.errors import ModelError
from nmcm_deploy.manifest import load_manifest
from tests.cluster_helpers import MLP_LAYERS, digits_npz, torch_reference, write_manifest
from tests.conftest import Result, run_nmcm
from tests.engine_helpers import TRAIN_RTOL, rel_err
from tests.test_planner import WIDE_CNN


def nmcm(state: Path, *args: str | Path) -> Result:
    return run_nmcm(*args, env={"NMCM_STATE_DIR": str(state)})


def auto(manifest: Path) -> Path:
    doc = yaml.safe_load(manifest.read_text())
    doc["spec"]["training"]["micro_batches"] = "auto"
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return manifest


def modelled_epoch(path: Path, count: int) -> float | None:
    """The epoch of the manifest at ``count`` micro-batches, placed as apply places it; None if
    it does not fit."""
    manifest = planner.with_micro_batches(load_manifest(path, fit=False), count)
    ir = manifest.model.ir()
    try:
        plan = plan_pipeline(manifest, ir, planner.resolve(manifest, ir))
    except ModelError:
        return None
    if not all(s.fit.fits for s in plan.stages):
        return None
    data = manifest.dataset
    train, test = sample_counts(data.name, data.npz, data.test_fraction)
    return model.estimate(plan, manifest.training, train, test).epoch_s


CASES = list(
    itertools.product(
        ["mlp", "cnn"],
        [[("f413", 0, 3), ("h7a3", 4, 5)], [("h7a3", 0, 1), ("f413", 2, 5)]],
        ["sequential", "pipelined"],
        [False, True],  # stages: auto
        [8, 16, 24],  # batch size
    )
)


@pytest.mark.parametrize(
    ("layers", "stages", "schedule", "stages_auto", "batch"),
    random.Random(10).sample(CASES, 16),  # a fixed sample of the space
)
def test_the_chosen_count_is_never_slower_than_any_other_that_fits(
    tmp_path: Path,
    layers: str,
    stages: list[tuple[str, int, int]],
    schedule: str,
    stages_auto: bool,
    batch: int,
) -> None:
    path = auto(
        write_manifest(
            tmp_path,
            name="mb",
            stages=stages,
            layers=MLP_LAYERS if layers == "mlp" else None,
            input_shape=[64] if layers == "mlp" else None,
            schedule=schedule,
            stages_auto=stages_auto,
            batch_size=batch,
        )
    )
    manifest = load_manifest(path)
    chosen = planner.resolve_manifest(manifest)
    assert chosen.training.micro_batches_auto
    assert chosen.training.micro_batches in manifest.training.micro_batch_choices()
    best = modelled_epoch(path, chosen.training.micro_batches)
    assert best is not None
    for count in manifest.training.micro_batch_choices():
        other = modelled_epoch(path, count)
        assert other is None or best <= other, (count, other, best)
        if other == best:  # the fewest micro-batches among equals
            assert chosen.training.micro_batches <= count


def single_f413(tmp_path: Path, batch: int, micro_batches: int | str) -> Path:
    path = write_manifest(
        tmp_path, name=f"wide-{batch}", stages=[("f413", 0, 7)], layers=WIDE_CNN, batch_size=batch
    )
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["training"]["micro_batches"] = micro_batches
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_a_model_that_fits_only_in_enough_micro_batches_is_valid_with_auto(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    # The wide CNN at batch 16 fits one F413 only with 8 micro-batches or more (2 samples each).
    assert nmcm(state, "validate", single_f413(tmp_path, 16, 4)).code == 1
    path = single_f413(tmp_path, 16, "auto")
    assert nmcm(state, "validate", path).code == 0
    estimate = nmcm(state, "estimate", path, "-o", "json")
    assert estimate.code == 0, estimate.output
    doc = json.loads(estimate.stdout)
    assert doc["micro_batches_auto"] is True
    assert doc["micro_batches"] >= 8
    assert all(modelled_epoch(path, m) is None for m in range(1, 8))
    export = nmcm(state, "export", path, "--out", tmp_path / "export", "-o", "json")
    assert export.code == 0, export.output


def test_when_no_count_fits_validate_and_apply_name_the_field(tmp_path: Path) -> None:
    state = tmp_path / "state"
    path = single_f413(tmp_path, 32, "auto")
    validated = nmcm(state, "validate", path)
    assert validated.code == 1
    assert "spec.training.micro_batches" in validated.output
    assert "no count from 1 to 16 fits" in validated.output
    applied = nmcm(state, "apply", path)
    assert applied.code == 1
    assert "no count from 1 to 16 fits" in applied.output
    assert "Traceback" not in applied.output


def test_apply_trains_in_the_chosen_count_like_pytorch(tmp_path: Path) -> None:
    state = tmp_path / "state"
    npz = digits_npz(tmp_path / "digits.npz")
    path = auto(
        write_manifest(
            tmp_path,
            name="mb-apply",
            stages=[("f413", 0, 3), ("h7a3", 4, 5)],
            npz=npz,
            epochs=2,
        )
    )
    planned = nmcm(state, "plan", path, "-o", "json")
    assert planned.code == 0, planned.output
    plan = json.loads(planned.stdout)
    assert plan["micro_batches_auto"] is True
    estimate = json.loads(nmcm(state, "estimate", path, "-o", "json").stdout)
    assert plan["micro_batches"] == estimate["micro_batches"]
    applied = nmcm(state, "apply", path, "--out", tmp_path / "out")
    assert applied.code == 0, applied.output
    assert f"{plan['micro_batches']} micro-batch(es)" in applied.stdout
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["micro_batches"] == plan["micro_batches"]
    trained = torch.load(tmp_path / "out" / "model.pt", weights_only=True)
    reference = torch_reference(path)
    errors = {name: rel_err(trained[name], reference[name]) for name in reference}
    assert max(errors.values()) <= TRAIN_RTOL, errors
    nmcm(state, "down", path)
