"""The stage planner (nmcm_deploy/costs/planner.py): its search is exact for the closed form it
optimises (checked against brute force on sampled instances), its choice is never slower under
the model than any manual split of the same nodes in any order, and a model that fits nowhere is
an error that names the layer and the shortfall."""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

import pytest

from nmcm_deploy.compiler.cluster import build_model, plan_pipeline
from nmcm_deploy.costs import model, planner
from nmcm_deploy.errors import ManifestInvalid, ModelError
from nmcm_deploy.manifest import load_manifest
from tests.cluster_helpers import write_manifest

TRAIN, TEST = 1438, 359  # the digits split at test_fraction 0.2

MLP = [
    {"type": "linear", "out_features": 32},
    {"type": "relu"},
    {"type": "linear", "out_features": 10},
    {"type": "softmax"},
]
WIDE_CNN = [  # fits no single F413 at batch 16 in 4 micro-batches, two of them: splitting is a must
    {"type": "conv2d", "out_channels": 20, "kernel_size": 3, "padding": 1},
    {"type": "relu"},
    {"type": "conv2d", "out_channels": 20, "kernel_size": 3, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel_size": 2},
    {"type": "flatten"},
    {"type": "linear", "out_features": 10},
    {"type": "softmax"},
]


class FakeType:
    """A node type for the search alone: only its node count matters there."""

    def __init__(self, count: int) -> None:
        self.nodes = tuple(range(count))


@pytest.mark.parametrize("seed", range(60))
def test_the_search_is_exact_for_its_closed_form(seed: int) -> None:
    """Brute force over every split and type sequence finds no batch time below the search's."""
    rng = random.Random(seed)
    layers = rng.randint(1, 7)
    types = [FakeType(rng.randint(1, 3)) for _ in range(rng.randint(1, 3))]
    ranges = planner._Ranges({}, {}, {})
    for i in range(layers):
        for j in range(i, layers):
            for t in range(len(types)):
                ranges.fits[i, j, t] = rng.random() < 0.85
                ranges.time[i, j, t] = rng.uniform(0.1, 5.0) * (j - i + 1)
    micro_batches = rng.randint(1, 8)
    sequential = rng.random() < 0.3
    every = planner.all_splits(ranges, types, layers, 10**6)  # type: ignore[arg-type]
    assert every is not None
    found = planner._front_search(ranges, types, layers, micro_batches, sequential)  # type: ignore[arg-type]
    if not every:
        assert found == []
        return
    brute = min(
        planner.closed_form(
            sum(ranges.time[s] for s in split),
            max(ranges.time[s] for s in split),
            micro_batches,
            sequential,
        )
        for split in every
    )
    assert found[0][0] == pytest.approx(brute)


def manual_epochs(manifest_path: Path) -> dict[tuple[tuple[str, int, int], ...], float]:
    """The modelled epoch of every manual split of the manifest's nodes, in every order."""
    manifest = load_manifest(manifest_path)
    _, ir = build_model(manifest)
    names = [n.name for n in manifest.nodes]
    out = {}
    for split in planner.splits(len(ir.layers), len(names)):
        for order in itertools.permutations(names, len(split)):
            pipeline = tuple((n, a, b) for n, (a, b) in zip(order, split, strict=True))
            plan = plan_pipeline(manifest, ir, pipeline)
            if all(s.fit.fits for s in plan.stages):
                out[pipeline] = model.estimate(plan, manifest.training, TRAIN, TEST).epoch_s
    return out


@pytest.mark.parametrize(
    ("layers", "input_shape"), [(MLP, [64]), (None, None), (WIDE_CNN, None)], ids=str
)
@pytest.mark.parametrize(
    "nodes",
    [("f413", "h7a3"), ("f413", "f413b"), ("h7a3", "h7a3b", "f413"), ("f413", "f413b", "f413c")],
)
def test_auto_is_never_slower_than_a_manual_split(
    tmp_path: Path,
    layers: list[dict[str, object]] | None,
    input_shape: list[int] | None,
    nodes: tuple[str, ...],
) -> None:
    path = write_manifest(
        tmp_path,
        name="auto",
        stages=[(n, 0, 0) for n in nodes],
        stages_auto=True,
        layers=layers,
        input_shape=input_shape,
        micro_batches=4,
    )
    manifest = load_manifest(path)
    _, ir = build_model(manifest)
    manual = manual_epochs(path)
    if not manual:
        with pytest.raises(ModelError):
            planner.plan_stages(manifest, ir, TRAIN, TEST)
        return
    plan = planner.plan_stages(manifest, ir, TRAIN, TEST)
    assert plan.best.epoch_s <= min(manual.values()) * (1 + 1e-12)
    assert plan.best.pipeline in manual  # a split a user could have written
    assert [c.epoch_s for c in plan.ranked] == sorted(c.epoch_s for c in plan.ranked)
    used = {n for n, _, _ in plan.best.pipeline}
    assert set(plan.unused) == set(nodes) - used


def test_a_model_that_fits_nowhere_names_its_layer(tmp_path: Path) -> None:
    huge = [{"type": "linear", "out_features": 50000}, {"type": "softmax"}]
    path = write_manifest(
        tmp_path,
        name="huge",
        stages=[("f413", 0, 0), ("h7a3", 0, 0)],
        stages_auto=True,
        layers=huge,
        input_shape=[64],
    )
    # validate asks the planner, as apply will: the manifest is refused where `stages` is.
    with pytest.raises(ManifestInvalid) as refused:
        load_manifest(path)
    (problem,) = refused.value.problems
    assert problem.location.path == "spec.stages"
    assert re.search(r"layer 0 .* fits no node on its own: .*over by", problem.message)


def test_a_layer_too_big_at_this_batch_says_which_batch_would_fit(tmp_path: Path) -> None:
    """The error's suggestion is checked: at the batch size it names, the model fits."""
    layers = [
        {"type": "conv2d", "out_channels": 64, "kernel_size": 3, "padding": 1},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "flatten"},
        {"type": "linear", "out_features": 10},
        {"type": "softmax"},
    ]

    def manifest(batch: int) -> Path:
        return write_manifest(
            tmp_path,
            name=f"batch{batch}",
            stages=[("f413", 0, 0), ("f413b", 0, 0)],
            stages_auto=True,
            layers=layers,
            batch_size=batch,
            micro_batches=4,
        )

    with pytest.raises(ManifestInvalid) as refused:
        load_manifest(manifest(16))
    (problem,) = refused.value.problems
    found = re.search(r"at batch_size (\d+) or less .* the model fits these nodes", problem.message)
    assert found, problem.message
    batch = int(found.group(1))
    assert 1 <= batch < 16
    loaded = load_manifest(manifest(batch))  # validate (and so the planner) accepts it now
    _, ir = build_model(loaded)
    assert planner.resolve(loaded, ir)
