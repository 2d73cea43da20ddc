"""`sim` clusters whose nodes talk through the real W5500 driver: each node process runs
`runtime::W5500Network` on `firmware/drivers/w5500` against the register-level emulated W5500 of
`firmware/tools/w5500_emulator`, bridged to the same loopback ports (`spec.sim.network:
w5500-emulator`, or `nmcm apply --sim-network w5500-emulator`).

* Two nodes train end to end with `nmcm apply` and the weights equal PyTorch's within TRAIN_RTOL,
  with two micro-batches in flight (activations and gradients cross on the chips' sockets).
* The switch is a start-up argument and part of each node's configuration: `plan` shows the nodes
  restarting and the job running again when it changes; the image is the same.
* A node killed mid-training fails `apply` within seconds, naming it; `status` says so; the next
  `apply` recovers.

All tests share one state directory, so the node libraries are built once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml

from nmcm_deploy.errors import ManifestInvalid
from nmcm_deploy.manifest import load_manifest
from tests.cluster_helpers import digits_npz, torch_reference, wait_for, write_manifest
from tests.conftest import ROOT, Result, run_nmcm
from tests.engine_helpers import TRAIN_RTOL, rel_err

EMULATED = "network: W5500 driver on an emulated chip"
THROUGH_THE_DRIVER = ("--sim-network", "w5500-emulator")


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One .nmcm for the module (the node libraries are built once); whatever it left running is
    stopped afterwards."""
    path = tmp_path_factory.mktemp("w5500-sim") / "state"
    yield path
    for file in path.glob("*/state.json"):
        for node in json.loads(file.read_text()).get("nodes", {}).values():
            if node.get("pid"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node["pid"], signal.SIGKILL)


def nmcm(state: Path, *args: str | Path) -> Result:
    return run_nmcm(*args, env={"NMCM_STATE_DIR": str(state)})


def with_sim_network(manifest: Path, network: str) -> Path:
    doc = yaml.safe_load(manifest.read_text())
    doc["spec"]["sim"] = {"network": network}
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return manifest


def node_log(state: Path, cluster: str, node: str) -> str:
    return (state / cluster / "logs" / f"{node}.log").read_text(errors="replace")


def test_the_manifest_field_is_typed_and_checked(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, name="typed", stages=[("f413", 0, 5)])
    assert load_manifest(manifest).sim.network == "posix"
    assert load_manifest(with_sim_network(manifest, "w5500-emulator")).sim.network == (
        "w5500-emulator"
    )
    with pytest.raises(ManifestInvalid) as info:
        load_manifest(with_sim_network(manifest, "w5500"))
    assert "spec.sim.network" in str(info.value.problems[0])


def test_two_nodes_train_through_the_w5500_driver_like_pytorch(tmp_path: Path, state: Path) -> None:
    npz = digits_npz(tmp_path / "digits.npz")
    manifest = with_sim_network(
        write_manifest(
            tmp_path,
            name="w5500-parity",
            stages=[("f413", 0, 3), ("h7a3", 4, 5)],
            npz=npz,
            epochs=2,
            micro_batches=2,
            weight_decay=1e-3,
        ),
        "w5500-emulator",
    )
    out = tmp_path / "out"
    result = nmcm(state, "apply", manifest, "--out", out)
    assert result.code == 0, result.output
    # Every byte went through the driver and the emulated chip.
    for node in ("f413", "h7a3"):
        assert EMULATED in node_log(state, "w5500-parity", node)
    trained = torch.load(out / "model.pt", weights_only=True)
    reference = torch_reference(manifest)
    assert list(trained) == list(reference)
    errors = {name: rel_err(trained[name], reference[name]) for name in reference}
    assert max(errors.values()) <= TRAIN_RTOL, errors
    metrics = json.loads((out / "metrics.json").read_text())
    assert all(n["bytes_sent"] > 0 and n["comm_s"] > 0 for n in metrics["nodes"])

    status = nmcm(state, "status", manifest, "-o", "json")
    assert status.code == 0, status.output
    (cluster,) = json.loads(status.stdout)["clusters"]
    assert [(n["name"], n["sync"], n["health"]) for n in cluster["nodes"]] == [
        ("f413", "Synced", "Healthy"),
        ("h7a3", "Synced", "Healthy"),
    ]
    assert nmcm(state, "plan", manifest, "--detailed-exitcode").code == 0

    # Back to host sockets: the same images restart with another configuration, the job runs again.
    plan = nmcm(
        state, "plan", manifest, "--sim-network", "posix", "--detailed-exitcode", "-o", "json"
    )
    assert plan.code == 2, plan.output
    changes = [(c["op"], c["path"]) for c in json.loads(plan.stdout)["changes"]]
    assert changes == [
        ("update", "nodes.f413.config"),
        ("update", "nodes.h7a3.config"),
        ("train", "job"),
    ]
    bad = nmcm(state, "plan", manifest, "--sim-network", "w5500")
    assert bad.code == 1 and "w5500-emulator" in bad.stderr and "Traceback" not in bad.stderr

    assert nmcm(state, "down", manifest).code == 0
    assert "stopped" in node_log(state, "w5500-parity", "h7a3")


def test_killed_node_fails_apply_fast_and_the_next_apply_recovers(
    tmp_path: Path, state: Path
) -> None:
    manifest = write_manifest(
        tmp_path,
        name="w5500-faulty",
        stages=[("f413", 0, 3), ("h7a3", 4, 5)],
        npz=digits_npz(tmp_path / "digits.npz"),  # 20 batches an epoch: seconds of training
        epochs=40,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmcm_deploy", "apply", str(manifest), *THROUGH_THE_DRIVER],
        cwd=ROOT,
        env={**os.environ, "NMCM_STATE_DIR": str(state), "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    state_file = state / "w5500-faulty" / "state.json"

    def training() -> bool:
        return (
            state_file.exists() and json.loads(state_file.read_text())["job"]["status"] == "running"
        )

    try:
        wait_for(training, 120)
        time.sleep(0.5)
        victim = json.loads(state_file.read_text())["nodes"]["h7a3"]["pid"]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    elapsed = time.monotonic() - killed_at
    assert proc.returncode == 1, out + err
    assert elapsed < 10, f"apply took {elapsed:.1f} s to notice"
    assert "h7a3" in err and "Traceback" not in err
    assert EMULATED in node_log(state, "w5500-faulty", "f413")

    status = nmcm(state, "status", manifest, "-o", "json")
    assert status.code == 1
    (cluster,) = json.loads(status.stdout)["clusters"]
    health = {n["name"]: n["health"] for n in cluster["nodes"]}
    # The survivor still answers through its chip; the victim is gone.
    assert health == {"f413": "Healthy", "h7a3": "Missing"}
    assert cluster["job"]["status"] == "failed"

    manifest.write_text(manifest.read_text().replace("epochs: 40", "epochs: 1"))
    recovered = nmcm(state, "apply", manifest, *THROUGH_THE_DRIVER)
    assert recovered.code == 0, recovered.output
    healthy = nmcm(state, "status", manifest)
    assert healthy.code == 0, healthy.output
    assert nmcm(state, "down", manifest).code == 0
