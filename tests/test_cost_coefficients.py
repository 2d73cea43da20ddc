"""Fitting and storing the cost model's weights (nmcm_deploy/costs/coefficients.py): known weights
are recovered from counts they generated, the fit minimises relative error, files round-trip,
and a bad file or a feature without a weight is a clear error."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from nmcm_deploy.compiler.ir import Layer, LayerKind
from nmcm_deploy.costs.coefficients import (
    Coefficients,
    CoefficientsError,
    Observation,
    dump,
    fit,
    load,
    predict,
)
from nmcm_deploy.costs.features import CONV_FORWARD, Call, Direction, features


def conv_observations(weights: dict[str, float], seed: int) -> list[Observation]:
    rng = random.Random(seed)
    out = []
    for _ in range(40):
        c, oc, h = rng.randint(1, 8), rng.randint(1, 16), rng.randint(4, 16)
        k, pad = rng.randint(1, 3), rng.randint(0, 1)
        o = h + 2 * pad - k + 1
        # Stride 1 only: the strided loops have features of their own.
        layer = Layer(LayerKind.CONV2D, (c, h, h), (oc, o, o), (k, k), (1, 1), (pad, pad), True)
        f = features(Call(layer, Direction.FORWARD, rng.randint(1, 16)))
        out.append(Observation(f, sum(weights[n] * v for n, v in f.items())))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_fit_recovers_the_weights_that_made_the_counts(seed: int) -> None:
    rng = random.Random(seed)
    names = CONV_FORWARD
    truth = {n: rng.uniform(0.5, 200) for n in names}
    result = fit(conv_observations(truth, seed))
    assert result.max_relative_error < 1e-6
    for observation in conv_observations(truth, seed + 100):  # shapes it never saw
        assert predict(result.weights, observation.features) == pytest.approx(
            observation.instructions, rel=1e-6
        )


def test_fit_keeps_weights_non_negative_and_weighs_errors_relatively() -> None:
    # y = 10 * x with one large outlier-free point and small ones: the relative fit is exact.
    small = [Observation({"x": float(x)}, 10.0 * x) for x in range(1, 6)]
    large = [Observation({"x": 1e6}, 1e7)]
    result = fit(small + large)
    assert result.weights == {"x": pytest.approx(10.0)}
    # A feature that only hurts gets weight 0, never a negative one.
    noisy = [Observation({"x": float(x), "y": float(x)}, 10.0 * x) for x in range(1, 6)]
    assert all(w >= 0 for w in fit(noisy).weights.values())


def test_a_feature_without_a_weight_is_an_error_not_a_zero() -> None:
    with pytest.raises(CoefficientsError, match="no weight for mac"):
        predict({"call": 100.0}, {"call": 1, "mac": 64})


def sample() -> Coefficients:
    return Coefficients(
        core="cortex-m4",
        source="qemu instructions (mps2-an386, -icount shift=0)",
        layers={"linear": {"forward": {"call": 90.0, "mac": 7.0}}},
        loss={"call": 50.0, "element": 30.0},
        step={"call": 20.0, "parameter": 6.0},
        quality={"linear forward": {"points": 12, "max_relative_error": 0.01}},
    )


def test_coefficients_round_trip_through_their_file(tmp_path: Path) -> None:
    path = tmp_path / "cortex-m4.yaml"
    dump(sample(), path, header=["fitted by a test"])
    assert path.read_text().startswith("# fitted by a test\n")
    assert load(path) == sample()


@pytest.mark.parametrize(
    "text",
    [
        "",
        "format_version: 99\n",
        "format_version: 1\ncore: cortex-m4\n",
        "format_version: 1\ncore: c\nsource: s\nlayers: {relu: {forward: {call: -1}}}\n"
        "loss: {}\nstep: {}\n",
        "format_version: 1\ncore: c\nsource: s\nlayers: []\nloss: {}\nstep: {}\n",
        "{{{",
    ],
)
def test_a_bad_coefficients_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(CoefficientsError, match=r"bad\.yaml"):
        load(path)
