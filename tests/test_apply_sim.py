"""`nmcm apply` / `plan` / `status` / `down` on real simulated clusters: node processes built from
the firmware, talking TCP on loopback, driven by the coordinator — as a user runs them."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from nmcm_deploy.compiler.cluster import build_model
from nmcm_deploy.manifest import load_manifest
from tests.cluster_helpers import (
    MLP_LAYERS,
    digits_npz,
    torch_reference,
    wait_for,
    write_manifest,
)
from tests.conftest import ROOT, Result, run_nmcm
from tests.engine_helpers import TRAIN_RTOL, rel_err


def nmcm(state: Path, *args: str | Path) -> Result:
    return run_nmcm(*args, env={"NMCM_STATE_DIR": str(state)})


def test_apply_trains_then_reconciles_nothing(tmp_path: Path, state_dir: Path) -> None:
    manifest = write_manifest(
        tmp_path, name="quick", stages=[("f413", 0, 3), ("h7a3", 4, 5)], epochs=5
    )
    first = nmcm(state_dir, "apply", manifest)
    assert first.code == 0, first.output
    artifacts = state_dir / "quick"
    metrics = json.loads((artifacts / "metrics.json").read_text())
    assert metrics["format_version"] == 1 and metrics["cluster"] == "quick"
    assert metrics["target"] == "sim" and metrics["schedule"] == "pipelined"
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4, 5]
    # The quick start's promise: the digits CNN reaches 95% on the held-out digits.
    assert metrics["epochs"][-1]["test_accuracy"] >= 0.95
    nodes = metrics["nodes"]
    assert [(n["name"], n["mcu"], n["stage"], n["layers"]) for n in nodes] == [
        ("f413", "stm32f413zh", 0, [0, 3]),
        ("h7a3", "stm32h7a3zi", 1, [4, 5]),
    ]
    for n in nodes:
        assert 0 < n["sram_bytes"] <= n["sram_capacity"]
        assert 0 < n["flash_bytes"] <= n["flash_capacity"]
        assert n["compute_s"] > 0 and n["bytes_sent"] > 0
    assert metrics["nodes"][0]["parameters"] == 80
    state_dict = torch.load(artifacts / "model.pt", weights_only=True)
    module, _ = build_model(load_manifest(manifest))
    assert list(state_dict) == list(module.state_dict())
    assert (artifacts / "report.md").read_text().startswith("## nmcm")
    assert (artifacts / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for word in ("f413", "h7a3", "stm32f413zh", "epoch"):
        assert word in first.stdout

    again = nmcm(state_dir, "apply", manifest)
    assert again.code == 0, again.output
    assert "nothing to do" in again.stdout
    assert nmcm(state_dir, "plan", manifest, "--detailed-exitcode").code == 0

    status = nmcm(state_dir, "status", manifest, "-o", "json")
    assert status.code == 0, status.output
    doc = json.loads(status.stdout)
    (cluster,) = doc["clusters"]
    assert [(n["name"], n["sync"], n["health"]) for n in cluster["nodes"]] == [
        ("f413", "Synced", "Healthy"),
        ("h7a3", "Synced", "Healthy"),
    ]
    assert cluster["job"]["status"] == "succeeded"
    # Each node's log is named, and `nmcm logs` shows it: the node said the coordinator came.
    for node in cluster["nodes"]:
        assert Path(node["log"]).is_file()
        logs = nmcm(state_dir, "logs", manifest, node["name"])
        assert logs.code == 0, logs.output
        assert logs.stdout == Path(node["log"]).read_text(errors="replace")
        assert "coordinator connected" in logs.stdout

    # A new learning rate changes the job only: no node is rebuilt or restarted.
    manifest.write_text(manifest.read_text().replace("lr: 0.05", "lr: 0.02"))
    plan = nmcm(state_dir, "plan", manifest, "--detailed-exitcode", "-o", "json")
    assert plan.code == 2, plan.output
    planned = json.loads(plan.stdout)
    assert [c["op"] for c in planned["changes"]] == ["train"]
    # In the manifest's terms: the field, before and after; no node's memory moves.
    assert planned["fields"] == [
        {"path": "spec.training.optimizer.lr", "kind": "changed", "before": 0.05, "after": 0.02}
    ]
    assert planned["memory"] == []
    assert "spec.training.optimizer.lr 0.05 → 0.02" in nmcm(state_dir, "plan", manifest).stdout
    # Another split moves layers, and the memory each node needs with them.
    resplit = yaml.safe_load(manifest.read_text())
    resplit["spec"]["stages"][0]["layers"] = [0, 2]
    resplit["spec"]["stages"][1]["layers"] = [3, 5]
    other = tmp_path / "resplit.yaml"
    other.write_text(yaml.safe_dump(resplit, sort_keys=False))
    moved = json.loads(nmcm(state_dir, "plan", other, "-o", "json").stdout)
    assert [f["path"] for f in moved["fields"]] == [
        "spec.training.optimizer.lr",
        "spec.stages[0].layers",
        "spec.stages[1].layers",
    ]
    assert moved["fields"][1]["before"] == [0, 3] and moved["fields"][1]["after"] == [0, 2]
    assert [m["node"] for m in moved["memory"]] == ["f413", "h7a3"]
    for m in moved["memory"]:
        assert m["sram_bytes"][0] > 0 and m["flash_bytes"][0] > 0
        assert (m["sram_bytes"][0], m["flash_bytes"][0]) != (
            m["sram_bytes"][1],
            m["flash_bytes"][1],
        )

    down = nmcm(state_dir, "down", manifest, "-o", "json")
    assert down.code == 0, down.output
    stopped = json.loads(down.stdout)
    assert (stopped["cluster"], stopped["stopped"], stopped["not_stopped"]) == (
        "quick",
        ["f413", "h7a3"],
        [],
    )
    again = nmcm(state_dir, "down", manifest, "-o", "json")
    assert again.code == 0 and json.loads(again.stdout)["stopped"] == []
    after = nmcm(state_dir, "status", manifest, "-o", "json")
    assert after.code == 1
    assert {n["health"] for n in json.loads(after.stdout)["clusters"][0]["nodes"]} == {"Missing"}


# The parity matrix: every split point of the CNN over two nodes, and some over three, with both
# schedules and several micro-batch counts: (stages, schedule, micro-batches).
CNN_SPLITS = [
    ([("f413", 0, 5)], "pipelined", 1),
    ([("f413", 0, 0), ("h7a3", 1, 5)], "pipelined", 2),
    ([("f413", 0, 1), ("h7a3", 2, 5)], "sequential", 1),
    ([("f413", 0, 2), ("h7a3", 3, 5)], "sequential", 4),
    ([("f413", 0, 4), ("h7a3", 5, 5)], "pipelined", 3),
    ([("h7a3", 0, 3), ("f413", 4, 5)], "pipelined", 4),
    ([("f413", 0, 1), ("h7a3", 2, 3), ("f413b", 4, 5)], "pipelined", 3),
    ([("h7a3", 0, 0), ("f413", 1, 4), ("h7a3b", 5, 5)], "sequential", 2),
]
MLP_SPLITS = [
    ([("f413", 0, 1), ("h7a3", 2, 5)], "pipelined", 4),
    ([("f413", 0, 0), ("f413b", 1, 3), ("h7a3", 4, 5)], "pipelined", 2),
]


@pytest.mark.parametrize(
    ("model", "stages", "schedule", "micro_batches"),
    [("cnn", *c) for c in CNN_SPLITS] + [("mlp", *c) for c in MLP_SPLITS],
    ids=lambda v: v if isinstance(v, str | int) else "-".join(f"{a}{b}" for _, a, b in v),
)
def test_split_training_equals_pytorch(
    tmp_path: Path,
    state_dir: Path,
    model: str,
    stages: list[tuple[str, int, int]],
    schedule: str,
    micro_batches: int,
) -> None:
    npz = digits_npz(tmp_path / "digits.npz", flat=model == "mlp")
    manifest = write_manifest(
        tmp_path,
        name="parity",
        stages=stages,
        layers=MLP_LAYERS if model == "mlp" else None,
        input_shape=[64] if model == "mlp" else None,
        npz=npz,
        epochs=2 if model == "cnn" else 1,
        micro_batches=micro_batches,
        schedule=schedule,
        weight_decay=1e-3,
    )
    if model == "mlp":  # the MLP reads the npz flattened: write one shaped (N, 64)
        import numpy as np

        data = dict(np.load(npz))
        np.savez(
            npz, **{k: v.reshape(len(v), -1) if k.startswith("x") else v for k, v in data.items()}
        )
        manifest.write_text(manifest.read_text().replace("name: sklearn-digits", f"npz: {npz}"))
    out = tmp_path / "out"
    result = nmcm(state_dir, "apply", manifest, "--out", out)
    assert result.code == 0, result.output
    trained = torch.load(out / "model.pt", weights_only=True)
    reference = torch_reference(manifest)
    assert list(trained) == list(reference)
    errors = {name: rel_err(trained[name], reference[name]) for name in reference}
    assert max(errors.values()) <= TRAIN_RTOL, errors
    assert nmcm(state_dir, "down", manifest).code == 0


def test_killed_node_fails_apply_fast_and_the_next_apply_recovers(
    tmp_path: Path, state_dir: Path
) -> None:
    manifest = write_manifest(
        tmp_path,
        name="faulty",
        stages=[("f413", 0, 2), ("h7a3", 3, 4), ("f413b", 5, 5)],
        epochs=40,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmcm_deploy", "apply", str(manifest)],
        cwd=ROOT,
        env={**os.environ, "NMCM_STATE_DIR": str(state_dir), "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state_file = state_dir / "faulty" / "state.json"

    def training() -> bool:
        return (
            state_file.exists() and json.loads(state_file.read_text())["job"]["status"] == "running"
        )

    wait_for(training, 120)
    time.sleep(0.5)
    victim = json.loads(state_file.read_text())["nodes"]["h7a3"]["pid"]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    out, err = proc.communicate(timeout=60)
    elapsed = time.monotonic() - killed_at
    assert proc.returncode == 1, out + err
    assert elapsed < 10, f"apply took {elapsed:.1f} s to notice"
    assert "h7a3" in err and "Traceback" not in err

    status = nmcm(state_dir, "status", manifest, "-o", "json")
    assert status.code == 1
    health = {n["name"]: n["health"] for n in json.loads(status.stdout)["clusters"][0]["nodes"]}
    assert health["h7a3"] == "Missing"
    assert json.loads(status.stdout)["clusters"][0]["job"]["status"] == "failed"

    manifest.write_text(manifest.read_text().replace("epochs: 40", "epochs: 1"))
    recovered = nmcm(state_dir, "apply", manifest)
    assert recovered.code == 0, recovered.output
    assert nmcm(state_dir, "status", manifest).code == 0


@pytest.mark.parametrize("schedule", ["sequential", "pipelined"])
def test_metrics_say_what_ran_window_and_micro_batches(
    tmp_path: Path, state_dir: Path, schedule: str
) -> None:
    """metrics.json reports the window the schedule ran with and how many micro-batches each
    batch really ran in: 35 samples in batches of 16 leave a batch of 3, which runs in 3 of the
    manifest's 4 micro-batches."""
    npz = digits_npz(tmp_path / "digits.npz", train=35, test=10)
    manifest = write_manifest(
        tmp_path,
        name="ran",
        stages=[("f413", 0, 3), ("h7a3", 4, 5)],
        npz=npz,
        epochs=2,
        batch_size=16,
        micro_batches=4,
        schedule=schedule,
    )
    out = tmp_path / "out"
    result = nmcm(state_dir, "apply", manifest, "--out", out)
    assert result.code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["micro_batches"] == 4
    assert metrics["window"] == (1 if schedule == "sequential" else 4)
    assert metrics["micro_batches_run"] == [
        {"micro_batches": 3, "batches": 2},
        {"micro_batches": 4, "batches": 4},
    ]
    # Every time figure says where it comes from, and the model's time on the MCUs for this
    # very run (2 epochs) stands beside what the sim nodes measured.
    assert metrics["time_sources"] == {"wall_time_s": "host clock", "nodes": "host clock"}
    model = metrics["model"]
    assert model["source"] == "model"
    assert model["run_s"] == pytest.approx(2 * model["epoch_s"], abs=1e-6)  # to the microsecond
    assert [n["name"] for n in model["nodes"]] == [n["name"] for n in metrics["nodes"]]
    for n in model["nodes"]:
        total = n["compute_s"] + n["comm_s"] + n["idle_s"]
        assert total == pytest.approx(model["run_s"], abs=3e-6)  # three figures, each to 1 us
    assert "host clock" in result.stdout and "[model]" in result.stdout
    report = (out / "report.md").read_text()
    assert "source: model" in report and "host clock" in report
    assert nmcm(state_dir, "down", manifest).code == 0


def test_a_log_gets_a_heartbeat_between_epoch_lines(tmp_path: Path, state_dir: Path) -> None:
    """Not a terminal (CI, a pipe): besides a line per epoch, a progress line at most every
    NMCM_HEARTBEAT_S seconds of host clock (10 by default; 0 here: one per batch but the last)."""
    manifest = write_manifest(tmp_path, name="heartbeat", stages=[("f413", 0, 5)], epochs=2)
    env = {"NMCM_STATE_DIR": str(state_dir), "NMCM_HEARTBEAT_S": "0"}
    result = run_nmcm("apply", manifest, env=env)
    assert result.code == 0, result.output
    # Batches count over the whole run, as the terminal's progress bar does.
    beat = re.compile(r"^training: batch (\d+)/(\d+) \(epoch (\d+)/2\), \d+ s \[host clock\]$")
    seen: list[tuple[int, int | None]] = []
    totals = set()
    for line in result.stderr.splitlines():
        if (m := beat.match(line)) is not None:
            totals.add(int(m.group(2)))
            seen.append((int(m.group(3)), int(m.group(1))))
        elif (e := re.match(r"^epoch (\d+)/2: loss ", line)) is not None:
            seen.append((int(e.group(1)), None))
    (batches,) = totals
    per_epoch = batches // 2
    expected: list[tuple[int, int | None]] = [(1, b) for b in range(1, per_epoch + 1)]
    expected += [(1, None)] + [(2, b) for b in range(per_epoch + 1, batches)] + [(2, None)]
    assert seen == expected, result.stderr
