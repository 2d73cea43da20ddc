"""A "valid" from `nmcm validate` is a promise that `apply` will not refuse the manifest: the model
a factory builds, its starting weights and the data are checked by validate with the very calls
apply makes, and apply refuses the same things before it builds anything.

Each class of bad content is sampled: non-finite values at random positions of every input array
and of the weights, labels outside the classes, factories that fail in every way a factory can.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from tests.cluster_helpers import write_manifest
from tests.conftest import Result, run_nmcm

NET = """
import torch
from torch import nn

def build():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Softmax(dim=1))
"""


def nmcm(tmp: Path, *args: str | Path, **env: str) -> Result:
    return run_nmcm(*args, env={"NMCM_STATE_DIR": str(tmp / "state"), **env})


def npz_manifest(tmp: Path, arrays: dict[str, np.ndarray], **kw: Any) -> Path:
    np.savez(tmp / "data.npz", **arrays)
    return write_manifest(
        tmp,
        name="content",
        stages=[("f413", 0, 3), ("h7a3", 4, 5)],
        npz=tmp / "data.npz",
        **kw,
    )


def digits_arrays(rng: np.random.Generator, train: int = 40, test: int = 10) -> dict[str, Any]:
    return {
        "x_train": rng.random((train, 1, 8, 8)).astype(np.float32),
        "y_train": rng.integers(0, 10, train),
        "x_test": rng.random((test, 1, 8, 8)).astype(np.float32),
        "y_test": rng.integers(0, 10, test),
    }


def factory_manifest(
    tmp: Path,
    source: str,
    weights: dict[str, torch.Tensor] | None,
    stages: tuple[tuple[int, int], ...] = ((0, 1), (2, 2)),
) -> Path:
    path = write_manifest(tmp, name="factory", stages=[("f413", 0, 1), ("h7a3", 2, 2)])
    (tmp / "net.py").write_text(textwrap.dedent(source))
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["model"] = {"input": [1, 8, 8], "source": {"file": "net.py", "factory": "build"}}
    for stage, (first, last) in zip(doc["spec"]["stages"], stages, strict=True):
        stage["layers"] = [first, last]
    if weights is not None:
        torch.save(weights, tmp / "weights.pt")
        doc["spec"]["model"]["weights"] = "weights.pt"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def assert_refused(tmp: Path, manifest: Path, field: str, *words: str, **env: str) -> None:
    """validate names the field and the cause; apply refuses the same before building."""
    validate = nmcm(tmp, "validate", manifest, **env)
    assert validate.code == 1, validate.output
    line = next(
        (ln for ln in validate.stderr.splitlines() if f": {field}: " in ln), validate.stderr
    )
    assert line.startswith(f"{manifest}:"), validate.stderr
    for word in words:
        assert word in line, (word, validate.stderr)
    assert "Traceback" not in validate.output
    apply = nmcm(tmp, "apply", manifest, **env)
    assert apply.code == 1, apply.output
    assert all(word in apply.stderr for word in words), apply.stderr
    assert "building" not in apply.output and "Traceback" not in apply.output
    assert not (tmp / "state" / "cache").exists()  # nothing was built


@pytest.mark.parametrize("seed", range(6))
def test_a_non_finite_input_anywhere_is_refused_by_name_and_index(
    tmp_path: Path, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    arrays = digits_arrays(rng)
    key = ("x_train", "x_test")[seed % 2]
    bad = (np.nan, np.inf, -np.inf)[seed % 3]
    flat = int(rng.integers(arrays[key].size))
    arrays[key].reshape(-1)[flat] = bad
    index = ", ".join(str(int(i)) for i in np.unravel_index(flat, arrays[key].shape))
    manifest = npz_manifest(tmp_path, arrays)
    assert_refused(tmp_path, manifest, "spec.dataset.npz", f"{key}[{index}]", str(float(bad)))


def test_a_value_that_overflows_float32_is_refused(tmp_path: Path) -> None:
    arrays = digits_arrays(np.random.default_rng(1))
    arrays["x_train"] = arrays["x_train"].astype(np.float64)
    arrays["x_train"][3, 0, 2, 5] = 1e300
    manifest = npz_manifest(tmp_path, arrays)
    assert_refused(tmp_path, manifest, "spec.dataset.npz", "x_train[3, 0, 2, 5]", "inf")


@pytest.mark.parametrize("key", ["y_train", "y_test"])
@pytest.mark.parametrize("label", [-1, 10, 12])
def test_labels_outside_the_models_classes_are_refused(
    tmp_path: Path, key: str, label: int
) -> None:
    arrays = digits_arrays(np.random.default_rng(abs(label)))
    arrays[key][7] = label
    manifest = npz_manifest(tmp_path, arrays)
    assert_refused(tmp_path, manifest, "spec.dataset.npz", f"{key}[7] is {label}", "0..9")


def test_an_empty_training_set_is_refused(tmp_path: Path) -> None:
    arrays = digits_arrays(np.random.default_rng(2), train=0)
    manifest = npz_manifest(tmp_path, arrays)
    assert_refused(tmp_path, manifest, "spec.dataset.npz", "x_train holds no samples")


def test_without_a_test_set_metrics_are_strict_json(tmp_path: Path) -> None:
    """Every value in metrics.json parses with a strict parser (no bare NaN): a run with an
    empty test set reports its test accuracy as null."""
    arrays = digits_arrays(np.random.default_rng(3), train=24, test=0)
    manifest = npz_manifest(tmp_path, arrays, epochs=2)
    result = nmcm(tmp_path, "apply", manifest, "--out", tmp_path / "out")
    assert result.code == 0, result.output

    def refuse(constant: str) -> None:
        raise AssertionError(f"metrics.json holds {constant}")

    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text(), parse_constant=refuse)
    assert [e["test_accuracy"] for e in metrics["epochs"]] == [None, None]
    assert "no test set" in result.stderr + result.stdout
    nmcm(tmp_path, "down", manifest)


# --- factories and weights ------------------------------------------------------------------

FACTORIES = {  # source, the field named, a word of the message
    "raises": (
        "def build():\n    raise RuntimeError('no model today')\n",
        "spec.model.source.factory",
        "no model today",
    ),
    "import fails": (
        "import no_such_module\n\ndef build():\n    pass\n",
        "spec.model.source.file",
        "no_such_module",
    ),
    "not a module": (
        "def build():\n    return 42\n",
        "spec.model.source.factory",
        "not a torch.nn.Module",
    ),
    "batchnorm": (
        NET.replace("nn.Flatten(), ", "nn.BatchNorm2d(1), nn.Flatten(), "),
        "spec.model.source",
        "BatchNorm2d",
    ),
    "dropout": (
        NET.replace("nn.Flatten(), ", "nn.Flatten(), nn.Dropout(0.1), "),
        "spec.model.source",
        "Dropout",
    ),
}


@pytest.mark.parametrize("case", sorted(FACTORIES))
def test_a_factory_that_cannot_make_the_model_is_refused(tmp_path: Path, case: str) -> None:
    source, field, word = FACTORIES[case]
    manifest = factory_manifest(tmp_path, source, None)
    assert_refused(tmp_path, manifest, field, word)


def test_a_factory_that_never_returns_is_stopped_and_named(tmp_path: Path) -> None:
    source = "def build():\n    while True:\n        pass\n"
    manifest = factory_manifest(tmp_path, source, None)
    assert_refused(
        tmp_path,
        manifest,
        "spec.model.source.factory",
        "net.py: build() did not finish within 2 s",
        NMCM_TRACE_TIMEOUT="2",
    )


def good_weights() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "1.weight": torch.randn(10, 64) * 0.1,
        "1.bias": torch.zeros(10),
    }


@pytest.mark.parametrize("seed", range(4))
def test_non_finite_starting_weights_are_refused_by_tensor_and_index(
    tmp_path: Path, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    weights = good_weights()
    key = ("1.weight", "1.bias")[seed % 2]
    flat = int(rng.integers(weights[key].numel()))
    weights[key].view(-1)[flat] = (float("nan"), float("inf"))[seed // 2]
    index = ", ".join(str(int(i)) for i in np.unravel_index(flat, tuple(weights[key].shape)))
    manifest = factory_manifest(tmp_path, NET, weights)
    assert_refused(tmp_path, manifest, "spec.model.weights", f"{key}[{index}]")


@pytest.mark.parametrize("case", ["wrong shape", "missing key"])
def test_weights_that_do_not_match_the_model_are_refused(tmp_path: Path, case: str) -> None:
    weights = good_weights()
    if case == "wrong shape":
        weights["1.weight"] = torch.zeros(10, 63)
    else:
        del weights["1.bias"]
    manifest = factory_manifest(tmp_path, NET, weights)
    assert_refused(tmp_path, manifest, "spec.model.weights", "does not match the model")


def test_a_factory_stage_past_the_models_layers_is_refused(tmp_path: Path) -> None:
    manifest = factory_manifest(tmp_path, NET, None, stages=((0, 1), (2, 5)))
    assert_refused(tmp_path, manifest, "spec.stages[1].layers", "layer 5 does not exist")


def test_a_sound_factory_with_weights_is_valid_and_planned(tmp_path: Path) -> None:
    manifest = factory_manifest(tmp_path, NET, good_weights())
    validate = nmcm(tmp_path, "validate", manifest)
    assert validate.code == 0, validate.output
    plan = nmcm(tmp_path, "plan", manifest, "--detailed-exitcode")
    assert plan.code == 2, plan.output  # compiles and has changes to make
