"""Whole models trained by nmcm-train and by the same loop in PyTorch, compared tensor by tensor
after 100+ SGD steps with momentum and weight decay (tolerance TRAIN_RTOL, engine_helpers).

The reference models train on sklearn's digits; a seeded family of random architectures of the
six layers trains on random data. Its summary (architectures, largest error, how each passed) is
written to build/engine-parity.txt.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nmcm_deploy.runtime import host_trainer
from tests.engine_helpers import (
    DIGITS_CNN,
    DIGITS_MLP,
    TRAIN_RTOL,
    TrainSetup,
    compare_training,
    describe,
    digits,
    random_setup,
    stage_blob,
    torch_model,
)

FAMILY_SIZE = 60
REPORT = Path(__file__).resolve().parents[1] / "build" / "engine-parity.txt"


def digits_setup(model: str, **options: Any) -> TrainSetup:
    x, y = digits()
    if model == "cnn":
        return TrainSetup((1, 8, 8), DIGITS_CNN, x.reshape(-1, 1, 8, 8), y, **options)
    return TrainSetup((64,), DIGITS_MLP, x, y, **options)


# 1797 samples in batches of 32: 57 steps per epoch, the last one of 5 samples; 120 steps cross
# an epoch boundary and use two partial batches.
REFERENCE_RUNS = {
    "mlp-cross_entropy": digits_setup("mlp", batch_size=32, steps=120),
    "mlp-mse": digits_setup("mlp", batch_size=32, steps=120, loss="mse", lr=0.2),
    "mlp-batch1": digits_setup("mlp", batch_size=1, steps=150),
    "cnn-cross_entropy": digits_setup("cnn", batch_size=32, steps=120),
    "cnn-mse": digits_setup("cnn", batch_size=32, steps=120, loss="mse", lr=0.2),
    "cnn-micro_batches": digits_setup("cnn", batch_size=32, steps=120, micro_batch=5, slots=3),
}


@pytest.mark.parametrize("name", REFERENCE_RUNS)
def test_reference_model_matches_pytorch(name: str) -> None:
    result = compare_training(REFERENCE_RUNS[name])
    assert result.max_error <= TRAIN_RTOL, result.verdict()[1]


@pytest.fixture(scope="module")
def family_report() -> Iterator[list[str]]:
    lines: list[str] = []
    yield lines
    if lines:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text("\n".join(sorted(lines)) + "\n")


@pytest.mark.parametrize("seed", range(FAMILY_SIZE))
def test_random_architecture_matches_pytorch(seed: int, family_report: list[str]) -> None:
    setup = random_setup(seed)
    result = compare_training(setup)
    ok, why = result.verdict()
    family_report.append(f"{seed:3d}  {result.max_error:.2e}  {why}  | {describe(setup)}")
    assert ok, f"seed {seed}: {describe(setup)}: {why}"


def test_family_covers_the_six_layers_and_both_losses() -> None:
    setups = [random_setup(seed) for seed in range(FAMILY_SIZE)]
    kinds = {layer["type"] for s in setups for layer in s.spec}
    assert kinds == {"linear", "conv2d", "relu", "flatten", "softmax", "maxpool2d"}
    assert {s.loss for s in setups} == {"cross_entropy", "mse"}
    assert any(s.spec[-1]["type"] == "softmax" for s in setups)
    assert any(s.spec[-1]["type"] != "softmax" for s in setups)
    assert any((s.micro_batch or s.batch_size) < s.batch_size for s in setups)
    assert all(s.steps >= 100 for s in setups)


def test_cnn_with_softmax_stays_finite_where_the_literal_loss_collapses() -> None:
    """DESIGN.md: nll_loss(log(softmax)) at lr 0.05 collapsed to NaN after 9 epochs; the fused
    loss must keep training: 12 epochs, every loss finite, the training set learnt."""
    x, y = digits()
    setup = TrainSetup((1, 8, 8), DIGITS_CNN, x.reshape(-1, 1, 8, 8), y, batch_size=16, steps=1)
    from nmcm_deploy.compiler.inline import inline_ir

    ir = inline_ir(setup.input_shape, setup.spec)
    rng = np.random.default_rng(0)
    batches = [
        order[i : i + 16]
        for order in (rng.permutation(len(x)) for _ in range(12))
        for i in range(0, len(x), 16)
    ]
    blob = stage_blob(ir, torch_model(ir, 0), micro_batch=16, momentum=False)
    job = host_trainer.Job(x=setup.x, y=y, steps=batches, lr=0.05)
    result = host_trainer.train(blob, job)
    assert np.all(np.isfinite(result.losses))
    last_epoch = slice(-len(batches) // 12, None)
    assert result.correct[last_epoch].sum() / len(x) > 0.95
