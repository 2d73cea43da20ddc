"""`nmcm study --train sim`: each configuration of the study trained on a sim cluster of its own,
with the configuration's best split, to show that every split computes the same model.

Each configuration becomes a manifest of its own (the study's model, data and training job; one
node per MCU of the sequence; the split as its stages; loopback ports free at that moment),
written beside the study's results and applied by `nmcm apply` in a child process with a state
folder under the study's, then taken down. The run's metrics are what apply wrote.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nmcm_deploy.costs.study import Configuration
from nmcm_deploy.errors import NmcmError
from nmcm_deploy.manifest.model import Manifest
from nmcm_deploy.profiles import board as board_profile
from nmcm_deploy.profiles import board_names
from nmcm_deploy.targets.ports import free_port_block


@dataclass(frozen=True)
class TrainedConfiguration:
    mcus: tuple[str, ...]
    split: str  # the split trained, as the study labels it
    micro_batches: int
    test_accuracy: float | None
    train_accuracy: float
    loss: float
    wall_time_s: float  # host clock, the whole run
    weights_sha256: str  # of the trained model.pt's tensors, to compare the runs

    def as_dict(self) -> dict[str, Any]:
        return {
            "mcus": list(self.mcus),
            "split": self.split,
            "micro_batches": self.micro_batches,
            "test_accuracy": self.test_accuracy,
            "train_accuracy": self.train_accuracy,
            "loss": self.loss,
            "wall_time_s": self.wall_time_s,
            "source": "sim (host clock)",
        }


def configuration_manifest(
    source: Path, manifest: Manifest, configuration: Configuration, index: int
) -> dict[str, Any]:
    """The manifest of one configuration's sim cluster, from the study's manifest file."""
    best = configuration.best
    if best is None:
        raise ValueError("a configuration without a fitting split is not trained")
    doc = yaml.safe_load(source.read_text(encoding="utf-8"))
    spec = doc["spec"]
    doc["metadata"]["name"] = f"{manifest.name[:40]}-study-{index}"
    spec["target"] = "sim"
    # Files the manifest names, absolute: the configuration's manifest lives elsewhere.
    model = spec["model"]
    if manifest.model.source is not None:
        model["source"]["file"] = str(manifest.model.source.file)
    if manifest.model.weights is not None:
        model["weights"] = str(manifest.model.weights)
    if manifest.dataset.npz is not None:
        spec["dataset"]["npz"] = str(manifest.dataset.npz)
    spec["training"]["micro_batches"] = best.micro_batches
    spec["network"] = {**spec.get("network", {}), "port": free_port_block(len(best.stages))}
    nodes = []
    for i, stage in enumerate(best.stages):
        board = next(b for b in board_names() if board_profile(b).mcu == stage.mcu)
        nodes.append(
            {
                "name": f"n{i}",
                "mcu": stage.mcu,
                "board": board,
                "w5500": {"ip": f"10.0.0.{10 + i}", "mac": f"02:4e:4d:00:01:{i:02x}"},
            }
        )
    spec["nodes"] = nodes
    spec["network"].update(subnet="10.0.0.0/24", gateway="10.0.0.1", coordinator="10.0.0.2")
    spec["stages"] = [
        {"node": f"n{i}", "layers": list(stage.layers)} for i, stage in enumerate(best.stages)
    ]
    return doc


def _nmcm(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NMCM_STATE_DIR": str(state), "NO_COLOR": "1"}
    env.pop("GITHUB_STEP_SUMMARY", None)
    return subprocess.run(
        [sys.executable, "-m", "nmcm_deploy", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


def train_configurations(
    source: Path,
    manifest: Manifest,
    configurations: list[Configuration],
    folder: Path,
    *,
    progress: Callable[[int, int, Configuration], None] | None = None,
) -> list[TrainedConfiguration]:
    """Train every configuration that has a fitting split, in order; raises NmcmError naming the
    configuration whose run failed (its manifest and log stay in ``folder``)."""
    import torch

    todo = [c for c in configurations if c.best is not None]
    state = folder / "state"
    out = []
    for done, configuration in enumerate(todo, start=1):
        index = configurations.index(configuration)
        run = folder / "runs" / f"{index:02d}"
        run.mkdir(parents=True, exist_ok=True)
        path = run / "cluster.yaml"
        doc = configuration_manifest(source, manifest, configuration, index)
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        applied = _nmcm(state, "apply", str(path), "--out", str(run / "out"))
        (run / "apply.log").write_text(applied.stdout + applied.stderr, encoding="utf-8")
        _nmcm(state, "down", str(path))
        if applied.returncode != 0:
            raise NmcmError(
                f"the sim run of {configuration.label} failed; see {run / 'apply.log'}",
                hint=f"its manifest is {path}",
            )
        metrics = json.loads((run / "out" / "metrics.json").read_text())
        final = metrics["epochs"][-1]
        trained = torch.load(run / "out" / "model.pt", weights_only=True)
        digest = hashlib.sha256()
        for name, tensor in trained.items():
            digest.update(name.encode())
            digest.update(tensor.detach().contiguous().numpy().tobytes())
        assert configuration.best is not None
        out.append(
            TrainedConfiguration(
                configuration.mcus,
                configuration.best.label,
                configuration.best.micro_batches,
                final.get("test_accuracy"),
                final["train_accuracy"],
                final["loss"],
                metrics["wall_time_s"],
                digest.hexdigest(),
            )
        )
        if progress is not None:
            progress(done, len(todo), configuration)
    return out
