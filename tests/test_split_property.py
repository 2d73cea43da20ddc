"""Any contiguous split of any supported model trains, and trains as PyTorch does.

A seeded family of random architectures built from the six layers (1-2 convolutions, optional
max-pooling, 0-2 hidden linears, an optional final softmax; images of 1-3 channels and 6-12
pixels, or flat inputs) is cut into 1-3 contiguous stages at random points, stages of
parameterless layers only included (a first stage of a lone flatten, a middle stage of a ReLU, a
last stage of a softmax), and trained by `nmcm apply` on simulated nodes; a smaller sample runs
the ARM images under QEMU. Every trained tensor must equal PyTorch's run of the same loop.

The clusters of one module share a state directory and so one build cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from nmcm_deploy.compiler.inline import inline_ir
from nmcm_deploy.errors import ModelError
from tests.cluster_helpers import free_port_block, torch_reference, write_manifest
from tests.conftest import Result, run_nmcm
from tests.engine_helpers import TRAIN_RTOL, rel_err

SIM_SEEDS = range(14)
QEMU_SEEDS = range(100, 103)
QEMU_LIFETIME_S = 240


@dataclass(frozen=True)
class SplitCase:
    input_shape: list[int]
    layers: list[dict[str, Any]]
    stages: list[tuple[str, int, int]]
    batch_size: int
    micro_batches: int
    schedule: str
    loss: str
    momentum: float
    seed: int

    def describe(self) -> str:
        kinds = [str(layer["type"]) for layer in self.layers]
        cuts = " | ".join(" ".join(kinds[a : b + 1]) for _, a, b in self.stages)
        return (
            f"{self.input_shape}: {cuts}; B{self.batch_size} M{self.micro_batches}"
            f" {self.schedule} {self.loss} momentum {self.momentum}"
        )


def random_layers(rng: np.random.Generator) -> tuple[list[int], list[dict[str, Any]]]:
    """One architecture of the family (see the module's docstring)."""
    layers: list[dict[str, Any]] = []
    if rng.random() < 0.75:
        size = int(rng.integers(6, 13))
        shape = [int(rng.integers(1, 4)), size, size]
        if rng.random() < 0.2:
            # A parameterless first layer.
            first = {"type": "maxpool2d", "kernel_size": 2, "stride": 1}
            layers.append(first if rng.random() < 0.5 else {"type": "relu"})
        for _ in range(int(rng.integers(1, 3))):
            kernel = int(rng.integers(1, 4))
            layers.append(
                {
                    "type": "conv2d",
                    "out_channels": int(rng.integers(1, 5)),
                    "kernel_size": kernel,
                    "stride": int(rng.integers(1, 3)),
                    "padding": int(rng.integers(0, 2)),
                }
            )
            if rng.random() < 0.7:
                layers.append({"type": "relu"})
        if rng.random() < 0.5:
            kernel = int(rng.integers(1, 4))
            layers.append(
                {
                    "type": "maxpool2d",
                    "kernel_size": kernel,
                    "stride": int(rng.integers(1, 3)),
                    "padding": int(rng.integers(0, kernel // 2 + 1)),
                }
            )
        layers.append({"type": "flatten"})
    else:
        shape = [int(rng.integers(6, 40))]
        if rng.random() < 0.3:
            layers.append({"type": "flatten"})  # a no-op on flat inputs, aliasing the input
    for _ in range(int(rng.integers(0, 3))):
        layers.append({"type": "linear", "out_features": int(rng.integers(3, 17))})
        if rng.random() < 0.7:
            layers.append({"type": "relu"})
    layers.append({"type": "linear", "out_features": int(rng.integers(2, 7))})
    if rng.random() < 0.5:
        layers.append({"type": "softmax"})
    return shape, layers


def random_case(seed: int, max_stages: int = 3) -> SplitCase:
    rng = np.random.default_rng(seed)
    while True:
        shape, layers = random_layers(rng)
        try:
            inline_ir(tuple(shape), layers)
        except ModelError:
            continue  # a kernel larger than what is left of the image: draw again
        break
    count = len(layers)
    stage_count = min(int(rng.choice([1, 2, 2, 3, 3])), max_stages, count)
    cuts: set[int] = set()
    free = [i for i, layer in enumerate(layers) if layer["type"] not in ("linear", "conv2d")]
    if stage_count > 1 and free and rng.random() < 0.6:
        # Cut around a parameterless layer so that it makes a stage of its own.
        i = int(rng.choice(free))
        cuts = {c for c in (i, i + 1) if 0 < c < count}
        cuts = set(sorted(cuts)[: stage_count - 1])
    others = [c for c in range(1, count) if c not in cuts]
    extra = stage_count - 1 - len(cuts)
    cuts |= {int(c) for c in rng.choice(others, extra, replace=False)} if extra > 0 else set()
    stage_count = len(cuts) + 1
    bounds = [0, *sorted(cuts), count]
    names: list[str] = []
    for _ in range(stage_count):
        kind = str(rng.choice(["f413", "h7a3"]))
        names.append(kind + "b" * sum(n.startswith(kind) for n in names))
    stages = [(names[i], bounds[i], bounds[i + 1] - 1) for i in range(stage_count)]
    batch = int(rng.integers(4, 11))
    return SplitCase(
        input_shape=shape,
        layers=layers,
        stages=stages,
        batch_size=batch,
        micro_batches=int(rng.integers(1, 4)),
        schedule=str(rng.choice(["pipelined", "sequential"])),
        loss=str(rng.choice(["cross_entropy", "mse"])),
        momentum=float(rng.choice([0.0, 0.9])),
        seed=seed,
    )


def write_case(folder: Path, case: SplitCase, *, train: int, test: int, target: str) -> Path:
    rng = np.random.default_rng(case.seed + 10_000)
    classes = case.layers[-1 if case.layers[-1]["type"] == "linear" else -2]["out_features"]
    npz = folder / "data.npz"
    x = rng.standard_normal((train + test, *case.input_shape)).astype(np.float32)
    y = rng.integers(0, classes, size=train + test)
    np.savez(npz, x_train=x[:train], y_train=y[:train], x_test=x[train:], y_test=y[train:])
    path = write_manifest(
        folder,
        name=f"split-{case.seed}",
        stages=case.stages,
        layers=case.layers,
        input_shape=case.input_shape,
        npz=npz,
        epochs=2,
        batch_size=case.batch_size,
        micro_batches=case.micro_batches,
        schedule=case.schedule,
        loss=case.loss,
        momentum=case.momentum,
        weight_decay=1e-3,
    )
    if target == "qemu":
        doc = yaml.safe_load(path.read_text())
        doc["spec"]["target"] = "qemu"
        doc["spec"]["network"]["port"] = free_port_block(3 * len(case.stages))
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("split-state")
    yield root
    for path in root.glob("*/state.json"):
        for node in json.loads(path.read_text()).get("nodes", {}).values():
            if node.get("pid"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node["pid"], signal.SIGKILL)


def nmcm(state: Path, *args: str | Path) -> Result:
    env = {"NMCM_STATE_DIR": str(state), "NMCM_QEMU_LIFETIME": str(QEMU_LIFETIME_S)}
    return run_nmcm(*args, env=env)


def train_and_compare(folder: Path, state: Path, case: SplitCase, manifest: Path) -> None:
    out = folder / "out"
    result = nmcm(state, "apply", manifest, "--out", out)
    try:
        assert result.code == 0, f"{case.describe()}\n{result.output}"
        trained = torch.load(out / "model.pt", weights_only=True)
        reference = torch_reference(manifest)
        assert list(trained) == list(reference)
        errors = {name: rel_err(trained[name], reference[name]) for name in reference}
        assert max(errors.values()) <= TRAIN_RTOL, f"{case.describe()}: {errors}"
    finally:
        nmcm(state, "down", manifest)


def test_the_family_holds_parameterless_stages_in_every_position() -> None:
    """The sample is what it claims: stages of only flatten/relu/maxpool2d/softmax turn up
    first, in the middle and last, and both image and flat models are drawn."""
    parameterless = {"flatten", "relu", "maxpool2d", "softmax"}
    positions: set[str] = set()
    flat = images = 0
    for seed in SIM_SEEDS:
        case = random_case(seed)
        flat += len(case.input_shape) == 1
        images += len(case.input_shape) == 3
        for i, (_, a, b) in enumerate(case.stages):
            if {str(layer["type"]) for layer in case.layers[a : b + 1]} <= parameterless:
                last = len(case.stages) - 1
                positions.add("first" if i == 0 else "last" if i == last else "middle")
    assert positions == {"first", "middle", "last"}, positions
    assert flat and images


# The two cases that were reported, besides the family: a first stage of a lone flatten (it hung
# the cluster) and a single QEMU node whose frames now and then end in 0xA5 (it hung the UART).
LONE_FLATTEN = SplitCase(
    input_shape=[1, 12, 6],
    layers=[{"type": "flatten"}, {"type": "linear", "out_features": 3}, {"type": "softmax"}],
    stages=[("f413", 0, 0), ("h7a3", 1, 2)],
    batch_size=8,
    micro_batches=1,
    schedule="pipelined",
    loss="cross_entropy",
    momentum=0.9,
    seed=1000,
)
QEMU_SINGLE = SplitCase(
    input_shape=[2, 7, 9],
    layers=[{"type": "flatten"}, {"type": "linear", "out_features": 6}, {"type": "softmax"}],
    stages=[("f413", 0, 2)],
    batch_size=8,
    micro_batches=1,
    schedule="pipelined",
    loss="cross_entropy",
    momentum=0.9,
    seed=1001,
)


@pytest.mark.parametrize(
    "case", [LONE_FLATTEN, *(random_case(s) for s in SIM_SEEDS)], ids=lambda c: f"seed{c.seed}"
)
def test_random_split_trains_as_pytorch_on_sim(
    tmp_path: Path, state: Path, case: SplitCase
) -> None:
    manifest = write_case(tmp_path, case, train=24, test=8, target="sim")
    train_and_compare(tmp_path, state, case, manifest)


@pytest.mark.parametrize(
    "case",
    [QEMU_SINGLE, *(random_case(s, max_stages=2) for s in QEMU_SEEDS)],
    ids=lambda c: f"seed{c.seed}",
)
def test_random_split_trains_as_pytorch_on_qemu(
    tmp_path: Path, state: Path, case: SplitCase
) -> None:
    for tool in ("qemu-system-arm", "arm-none-eabi-gcc"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: `make setup` installs it", pytrace=False)
    # QEMU_SINGLE: 40 training frames and their answers, each frame's end 0xA5 once in 256.
    train = 80 if case is QEMU_SINGLE else 16
    manifest = write_case(tmp_path, case, train=train, test=8, target="qemu")
    train_and_compare(tmp_path, state, case, manifest)
