"""`nmcm apply/status/down --target qemu`: the nodes' ARM images under qemu-system-arm — a Cortex-M4
node on mps2-an386, a Cortex-M7 node on mps2-an500 — trained by the coordinator through
their host links and relays, with PyTorch parity, and their instructions per layer and training
step, deterministic under -icount.

Every QEMU runs under `timeout` (targets/qemu.py; NMCM_QEMU_LIFETIME bounds it here), and the
module stops every node it started and checks that no QEMU of its own is left. The images are
built once for the module: its clusters share one state directory and so one build cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from nmcm_deploy.protocol import ProtocolTimeout
from nmcm_deploy.protocol.uart_link import ACCEPT, OPEN, RESET, open_uart_link
from nmcm_deploy.targets import qemu
from tests.cluster_helpers import digits_npz, free_port_block, torch_reference, write_manifest
from tests.conftest import QUICKSTART, Result, run_nmcm
from tests.engine_helpers import TRAIN_RTOL, rel_err

QEMU_LIFETIME_S = 240  # no node outlives a test run by more than this
CNN_TYPES = ["conv2d", "relu", "maxpool2d", "flatten", "linear", "softmax"]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    for tool in ("qemu-system-arm", "arm-none-eabi-gcc", "cmake", "timeout"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: `make setup` installs it", pytrace=False)
    root = tmp_path_factory.mktemp("qemu-state")
    yield root
    for path in root.glob("*/state.json"):
        for node in json.loads(path.read_text()).get("nodes", {}).values():
            if node.get("pid") and qemu.is_node_process(node["pid"]):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node["pid"], signal.SIGKILL)
    left = _our_qemus(root)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert not left, f"QEMU processes left running: {left}"


def _our_qemus(root: Path) -> list[int]:
    """QEMU processes whose image is in this module's build cache."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if qemu.is_node_process(int(entry.name)) and str(root).encode() in b" ".join(argv):
                found.append(int(entry.name))
    return found


def nmcm(state: Path, *args: str | Path) -> Result:
    env = {"NMCM_STATE_DIR": str(state), "NMCM_QEMU_LIFETIME": str(QEMU_LIFETIME_S)}
    return run_nmcm(*args, env=env)


def qemu_manifest(
    folder: Path, name: str, stages: list[tuple[str, int, int]], **training: Any
) -> Path:
    """The quick start's CNN on a slice of digits, target qemu, with a free block of the 3 ports
    per node a QEMU cluster takes (targets/qemu.py)."""
    npz = digits_npz(folder / "digits.npz", train=64, test=32)
    path = write_manifest(folder, name=name, stages=stages, npz=npz, **training)
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["target"] = "qemu"
    doc["spec"]["network"]["port"] = free_port_block(3 * len(stages))
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def apply(state: Path, manifest: Path, out: Path) -> dict[str, Any]:
    result = nmcm(state, "apply", manifest, "--out", out)
    assert result.code == 0, result.output
    assert "instructions of the first training step" in result.stdout
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    assert metrics["target"] == "qemu"
    assert metrics["time_sources"]["nodes"] == "qemu instructions"
    return metrics


def assert_parity(manifest: Path, out: Path) -> None:
    trained = torch.load(out / "model.pt", weights_only=True)
    reference = torch_reference(manifest)
    assert list(trained) == list(reference)
    errors = {name: rel_err(trained[name], reference[name]) for name in reference}
    assert max(errors.values()) <= TRAIN_RTOL, errors


def assert_counts(
    node: dict[str, Any], types: list[str], samples: int, *, fused_softmax: bool = True
) -> dict[str, Any]:
    counts: dict[str, Any] = node["instructions"]
    assert counts["layer_types"] == types
    assert len(counts["forward"]) == len(counts["backward"]) == len(types)
    assert all(f > 0 for f in counts["forward"]), counts
    # Every layer's backward runs but that of a softmax fused into cross-entropy.
    for kind, b in zip(types, counts["backward"], strict=True):
        assert (b == 0) == (kind == "softmax" and fused_softmax), counts
    assert all(v % 40 == 0 for v in counts["forward"] + counts["backward"])  # timer resolution
    assert counts["optimizer"] > 0 and counts["samples"] == samples
    assert counts["per_step"] == (
        sum(counts["forward"]) + sum(counts["backward"]) + counts["loss"] + counts["optimizer"]
    )
    return counts


def status(state: Path, manifest: Path) -> tuple[int, dict[str, Any]]:
    result = nmcm(state, "status", manifest, "-o", "json")
    (cluster,) = json.loads(result.stdout)["clusters"]
    return result.code, cluster


def test_ports_of_a_three_node_cluster() -> None:
    """docs/protocol.md, "Under QEMU": coordinator P+s, upstream link P+K+s, observers P+2K+s."""
    assert [qemu.node_ports(5000, s, 3) for s in range(3)] == [
        qemu.NodePorts(coordinator=5000, observer=5006, upstream=None, downstream=5004),
        qemu.NodePorts(coordinator=5001, observer=5007, upstream=5004, downstream=5005),
        qemu.NodePorts(coordinator=5002, observer=5008, upstream=5005, downstream=None),
    ]


def test_open_uart_link_drops_what_comes_before_the_accept() -> None:
    """The host side of the link preambles: OPEN out, then everything up to the node's ACCEPT
    (an older connection's tail, a RESET) dropped, and not a byte after it."""
    host, node = socket.socketpair()
    with host, node:
        frame_start = b"NMCP\x01"
        node.sendall(b"tail of a WEIGHTS frame" + RESET + ACCEPT[:7])
        sender = threading.Timer(0.1, node.sendall, args=(ACCEPT[7:] + frame_start,))
        sender.start()
        open_uart_link(host, timeout=5.0)
        sender.join()
        assert node.recv(64) == OPEN
        host.settimeout(5.0)
        assert host.recv(64) == frame_start


def test_open_uart_link_times_out_without_an_accept() -> None:
    host, node = socket.socketpair()
    with host, node:
        node.sendall(RESET)
        with pytest.raises(ProtocolTimeout):
            open_uart_link(host, timeout=0.3)


def test_profile_line_parses() -> None:
    line = "profile batch=1 samples=16 forward=40,80 backward=120,0 loss=40 step=400"
    steps = qemu.parse_profile(line)
    assert steps is not None
    assert (steps.batch, steps.samples, steps.forward, steps.backward) == (
        1,
        16,
        (40, 80),
        (120, 0),
    )
    assert steps.per_step == 40 + 80 + 120 + 40 + 400
    assert qemu.parse_profile("stage 0/1 listening on 127.0.0.1:5000") is None


def test_m4_node_trains_as_pytorch_counts_deterministically_status_and_down(
    tmp_path: Path, state: Path
) -> None:
    """One Cortex-M4 node (STM32F413ZH on mps2-an386): PyTorch's weights, instruction counts per
    layer, status while it runs, down; then a fresh start counts the very same instructions."""
    manifest = qemu_manifest(tmp_path, "qemu-m4", [("f413", 0, 5)], epochs=2, weight_decay=1e-3)
    metrics = apply(state, manifest, tmp_path / "first")
    assert_parity(manifest, tmp_path / "first")
    (node,) = metrics["nodes"]
    assert (node["name"], node["mcu"], node["layers"]) == ("f413", "stm32f413zh", [0, 5])
    counts = assert_counts(node, CNN_TYPES, samples=16)
    assert counts["loss"] > 0
    assert node["compute_s"] > 0  # instructions at the MCU's clock
    # The image's memory per region, read from its ELF, beside the plan's figures.
    elf = node["elf"]
    assert elf["source"] == "elf" and Path(elf["image"]).suffix == ".elf"
    regions = {r["name"]: r for r in elf["regions"]}
    assert set(regions) == {"CODE_RAM", "DATA_RAM"}
    assert all(0 < r["used_bytes"] <= r["capacity"] for r in regions.values())
    assert regions["DATA_RAM"]["used_bytes"] >= node["arena_bytes"]  # the arena is in there
    assert "from its ELF" in (tmp_path / "first" / "report.md").read_text()

    code, cluster = status(state, manifest)
    assert code == 0, cluster
    assert cluster["target"] == "qemu"
    assert [(n["name"], n["sync"], n["health"], n["steps"]) for n in cluster["nodes"]] == [
        ("f413", "Synced", "Healthy", 8)
    ]
    assert nmcm(state, "plan", manifest, "--detailed-exitcode").code == 0

    assert nmcm(state, "down", manifest).code == 0
    code, cluster = status(state, manifest)
    assert code == 1 and cluster["nodes"][0]["health"] == "Missing"
    assert not _our_qemus(state)

    again = apply(state, manifest, tmp_path / "again")
    assert again["nodes"][0]["instructions"] == node["instructions"]
    assert nmcm(state, "down", manifest).code == 0


def test_m7_node_trains_as_pytorch(tmp_path: Path, state: Path) -> None:
    """One Cortex-M7 node (STM32H7A3ZI on mps2-an500), plain SGD and MSE for a change."""
    manifest = qemu_manifest(
        tmp_path, "qemu-m7", [("h7a3", 0, 5)], epochs=2, momentum=0.0, loss="mse"
    )
    metrics = apply(state, manifest, tmp_path / "out")
    assert_parity(manifest, tmp_path / "out")
    (node,) = metrics["nodes"]
    assert (node["name"], node["mcu"]) == ("h7a3", "stm32h7a3zi")
    assert_counts(node, CNN_TYPES, samples=16, fused_softmax=False)
    assert nmcm(state, "down", manifest).code == 0


def test_m4_and_m7_nodes_train_through_their_host_links(tmp_path: Path, state: Path) -> None:
    """The CNN split over an M4 node and an M7 node, joined through their relays, two micro-batches
    in flight: the pipeline trains to PyTorch's weights, and each node counts its own layers."""
    manifest = qemu_manifest(
        tmp_path, "qemu-pair", [("f413", 0, 3), ("h7a3", 4, 5)], epochs=1, micro_batches=2
    )
    metrics = apply(state, manifest, tmp_path / "out")
    assert_parity(manifest, tmp_path / "out")
    first, last = metrics["nodes"]
    assert (first["mcu"], last["mcu"]) == ("stm32f413zh", "stm32h7a3zi")
    assert first["bytes_sent"] > 0 and last["bytes_sent"] > 0
    head = assert_counts(first, CNN_TYPES[:4], samples=16)
    tail = assert_counts(last, CNN_TYPES[4:], samples=16)
    assert head["loss"] == 0 and tail["loss"] > 0  # the loss is the last stage's

    code, cluster = status(state, manifest)
    assert code == 0, cluster
    assert [n["steps"] for n in cluster["nodes"]] == [4, 4]
    assert nmcm(state, "down", manifest).code == 0
    assert not _our_qemus(state)


def test_quickstart_trains_all_of_digits_on_qemu_as_on_sim(tmp_path: Path, state: Path) -> None:
    """The quick start as shipped (M4 + M7, 5 epochs, all 1,437 training samples of digits) under
    QEMU, through the host links: the same weights as the sim cluster's to float rounding (the
    ARM build contracts multiply-adds into FMAs, the host's does not) and the same accuracy."""
    doc = yaml.safe_load(QUICKSTART.read_text())
    doc["spec"]["network"]["port"] = free_port_block(3 * len(doc["spec"]["stages"]))
    runs = {}
    for target in ("sim", "qemu"):
        doc["spec"]["target"] = target
        manifest = tmp_path / f"{target}.yaml"
        manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
        out = tmp_path / target
        result = nmcm(state, "apply", manifest, "--out", out)
        assert result.code == 0, result.output
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["target"] == target
        runs[target] = (metrics, torch.load(out / "model.pt", weights_only=True))
        assert nmcm(state, "down", manifest).code == 0
    (sim, sim_weights), (emulated, weights) = runs["sim"], runs["qemu"]
    assert sum(r["batches"] for r in emulated["micro_batches_run"]) == 5 * 90  # ceil(1437 / 16)
    errors = {name: rel_err(weights[name], sim_weights[name]) for name in sim_weights}
    assert max(errors.values()) <= TRAIN_RTOL, errors
    for ours, theirs in zip(emulated["epochs"], sim["epochs"], strict=True):
        assert ours["test_accuracy"] == theirs["test_accuracy"], (ours, theirs)
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-4)
    assert not _our_qemus(state)
