"""Helpers of the cluster tests: manifests written on the fly (own ports, own state directory),
a small digits npz, and PyTorch's reference of the same training run."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from nmcm_deploy.compiler.cluster import build_model
from nmcm_deploy.datasets import batch_order, load_dataset
from nmcm_deploy.manifest import load_manifest
from nmcm_deploy.targets.ports import free_port_block
from tests.conftest import QUICKSTART
from tests.engine_helpers import reference_loss

MLP_LAYERS = [
    {"type": "linear", "out_features": 32},
    {"type": "relu"},
    {"type": "linear", "out_features": 16},
    {"type": "relu"},
    {"type": "linear", "out_features": 10},
    {"type": "softmax"},
]

NODE_TEMPLATES = {
    "f413": {"mcu": "stm32f413zh", "board": "nucleo-f413zh"},
    "h7a3": {"mcu": "stm32h7a3zi", "board": "nucleo-h7a3zi-q"},
}


def digits_npz(path: Path, *, flat: bool = False, train: int = 320, test: int = 80) -> Path:
    """A slice of scikit-learn's digits (shipped in the wheel: no download) as an npz file, shaped
    (N, 1, 8, 8) for the CNN or (N, 64) for the MLP."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape((-1, 64) if flat else (-1, 1, 8, 8))
    y = digits.target.astype(np.int64)
    np.savez(
        path,
        x_train=x[:train],
        y_train=y[:train],
        x_test=x[train : train + test],
        y_test=y[train : train + test],
    )
    return path


def write_manifest(
    folder: Path,
    *,
    name: str,
    stages: list[tuple[str, int, int]],
    layers: list[dict[str, Any]] | None = None,
    input_shape: list[int] | None = None,
    npz: Path | None = None,
    epochs: int = 1,
    batch_size: int = 16,
    micro_batches: int = 1,
    schedule: str = "pipelined",
    loss: str = "cross_entropy",
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    shuffle: bool = True,
    stages_auto: bool = False,
) -> Path:
    """A manifest like the quick start, with its own nodes (name prefix f413/h7a3), stages and a
    free block of loopback ports. ``stages_auto``: `stages: auto` over the nodes of ``stages``
    (their layer ranges are then ignored)."""
    doc = yaml.safe_load(QUICKSTART.read_text())
    doc["metadata"]["name"] = name
    if layers is not None:
        doc["spec"]["model"]["layers"] = layers
    if input_shape is not None:
        doc["spec"]["model"]["input"] = input_shape
    if npz is not None:
        doc["spec"]["dataset"] = {"npz": str(npz)}
    doc["spec"]["training"].update(
        epochs=epochs,
        batch_size=batch_size,
        micro_batches=micro_batches,
        schedule=schedule,
        loss=loss,
        shuffle=shuffle,
        optimizer={"type": "sgd", "lr": lr, "momentum": momentum, "weight_decay": weight_decay},
    )
    doc["spec"]["network"]["port"] = free_port_block(len(stages))
    nodes = []
    for i, (node, _, _) in enumerate(stages):
        nodes.append(
            {
                "name": node,
                **NODE_TEMPLATES[node[:4]],
                "w5500": {"ip": f"192.168.50.{11 + i}", "mac": f"02:4e:4d:00:00:{i + 1:02x}"},
            }
        )
    doc["spec"]["nodes"] = nodes
    doc["spec"]["stages"] = (
        "auto" if stages_auto else [{"node": n, "layers": [a, b]} for n, a, b in stages]
    )
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def torch_reference(manifest_path: Path) -> dict[str, torch.Tensor]:
    """The manifest's training run in PyTorch (float32, one thread): same starting weights, same
    batches, torch.optim.SGD, DESIGN.md's loss. Returns the trained state_dict."""
    torch.set_num_threads(1)
    manifest = load_manifest(manifest_path)
    module, _ = build_model(manifest)
    t = manifest.training
    data = load_dataset(
        name=manifest.dataset.name,
        npz=manifest.dataset.npz,
        input_shape=tuple(manifest.model.input),
        test_fraction=manifest.dataset.test_fraction,
        shuffle=t.shuffle,
        seed=t.seed,
    )
    opt = torch.optim.SGD(
        module.parameters(),
        lr=t.optimizer.lr,
        momentum=t.optimizer.momentum,
        weight_decay=t.optimizer.weight_decay,
    )
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    for epoch in batch_order(len(x), t.batch_size, t.epochs, t.shuffle, t.seed):
        for rows in epoch:
            opt.zero_grad()
            reference_loss(module, x[rows], y[rows], t.loss).backward()  # type: ignore[arg-type]
            opt.step()
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def wait_for(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")
