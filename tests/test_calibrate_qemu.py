"""The calibration image (firmware/apps/calibrate-qemu) and its runner (nmcm_deploy/costs/
measure.py): instructions per layer of the kernels that ship, on the Cortex-M4 build
(mps2-an386) and the Cortex-M7 build (mps2-an500), deterministic under -icount, equal to what a
QEMU node counts for the same training step, and a bad suite refused with a fatal line.

Real builds and real QEMU runs. Like the other ARM tests, these fail (they do not skip) when the
toolchain or QEMU is missing: `make setup` installs them. The module's images share one state
directory and so one build cache.
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml

from nmcm_deploy.compiler.inline import inline_ir
from nmcm_deploy.costs import measure as cal
from nmcm_deploy.errors import ModelError
from tests.cluster_helpers import free_port_block, write_manifest
from tests.conftest import run_nmcm

QEMU_LIFETIME_S = 240  # no node outlives a test run by more than this
CNN = [
    {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel_size": 2},
    {"type": "flatten"},
    {"type": "linear", "out_features": 10},
    {"type": "softmax"},
]
MLP = [
    {"type": "flatten"},
    {"type": "linear", "out_features": 24},
    {"type": "relu"},
    {"type": "linear", "out_features": 10},
]
STRIDED = [
    {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "bias": False},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "linear", "out_features": 5},
]


@pytest.fixture(scope="module")
def state(arm_state: Path) -> Path:
    return arm_state


def suite() -> list[cal.SuiteEntry]:
    """A small suite: the digits CNN with momentum (its stage keeps momentum buffers), an MLP
    behind a flatten with MSE and weight decay, a strided convolution without bias."""
    return [
        cal.SuiteEntry(inline_ir([1, 8, 8], CNN), 16, momentum=0.9),
        cal.SuiteEntry(inline_ir([1, 8, 8], MLP), 4, weight_decay=1e-3, loss="mse", seed=3),
        cal.SuiteEntry(inline_ir([2, 7, 7], STRIDED), 3, lr=0.1, seed=5),
    ]


@pytest.mark.parametrize("core", cal.CORES)
def test_counts_are_deterministic_and_shaped_like_the_models(state: Path, core: str) -> None:
    """Two QEMU runs of the same image give the same figures, one per layer of each model; the
    backward that does not run (a softmax fused into cross-entropy, a leading flatten) is 0,
    everything else is work, in the stopwatch's steps of 40 instructions."""
    entries = suite()
    first = cal.measure(entries, core)
    again = cal.measure(entries, core)
    assert not again.image.rebuilt and again.image.key == first.image.key
    assert again.entries == first.entries

    assert first.image.machine == {"cortex-m4": "mps2-an386", "cortex-m7": "mps2-an500"}[core]
    assert first.image.sizes.flash_bytes > os.path.getsize(
        first.image.elf.with_name(cal.SUITE_NAME)
    )
    for entry, measured in zip(entries, first.entries, strict=True):
        kinds = [layer.kind.label for layer in entry.ir.layers]
        assert [m.layer.kind.label for m in measured.layers] == kinds
        assert measured.samples == entry.samples
        figures = [*measured.forward, *measured.backward, measured.loss, measured.step]
        assert all(v % 40 == 0 for v in figures), figures
        assert all(f > 0 for f in measured.forward)
        assert measured.loss > 0 and measured.step > 0
        for i, (kind, b) in enumerate(zip(kinds, measured.backward, strict=True)):
            no_backward = (kind == "softmax" and entry.loss == "cross_entropy") or (
                kind == "flatten" and i == 0
            )
            assert (b == 0) == no_backward, (kinds, measured.backward)
        assert measured.per_step == sum(figures)


def test_the_two_cores_run_different_code(state: Path) -> None:
    """The M4 and M7 builds are separate images whose kernels compile differently: the CNN's
    convolution forward is not the same count on both (the cache serves the previous test's)."""
    entries = suite()[:1]
    m4, m7 = (cal.measure(entries, core) for core in cal.CORES)
    assert m4.image.key != m7.image.key
    assert m4.entries[0].forward[0] != m7.entries[0].forward[0]


def single_node_manifest(
    folder: Path, node: str, layers: list[dict[str, object]], entry: cal.SuiteEntry
) -> Path:
    """A one-node QEMU cluster whose first training step is exactly ``entry``'s (``layers``: its
    model, inline): the same model and starting weights (seed), one batch of ``samples`` in one
    micro-batch, the inputs and labels the image generates (in order: no shuffle), the same loss
    and optimizer."""
    x, y = cal.entry_data(entry)
    npz = folder / f"{node}-calibration.npz"
    np.savez(npz, x_train=x, y_train=y, x_test=x[:2], y_test=y[:2])
    path = write_manifest(
        folder,
        name=f"calibrate-{node}",
        stages=[(node, 0, len(entry.ir.layers) - 1)],
        layers=layers,
        input_shape=list(entry.ir.input_shape),
        npz=npz,
        epochs=1,
        batch_size=entry.samples,
        micro_batches=1,
        loss=entry.loss,
        lr=entry.lr,
        momentum=entry.momentum,
        weight_decay=entry.weight_decay,
        shuffle=False,
    )
    doc = yaml.safe_load(path.read_text())
    doc["spec"]["target"] = "qemu"
    doc["spec"]["model"]["seed"] = entry.seed
    doc["spec"]["network"]["port"] = free_port_block(3)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize(("core", "node"), [("cortex-m4", "f413"), ("cortex-m7", "h7a3")])
def test_counts_equal_a_qemu_nodes_profile(
    tmp_path: Path, state: Path, core: str, node: str
) -> None:
    """The key check: for the same model, weights, data and micro-batch, the calibration image
    counts per layer, loss and step exactly what a real QEMU node logs in its `profile` line for
    the one training step of a single-node cluster (metrics.json, nodes[].instructions)."""
    entry = cal.SuiteEntry(inline_ir([1, 8, 8], CNN), 16, momentum=0.9, weight_decay=1e-3)
    calibrated = cal.measure([entry], core).entries[0]

    manifest = single_node_manifest(tmp_path, node, CNN, entry)
    env = {"NMCM_STATE_DIR": str(state), "NMCM_QEMU_LIFETIME": str(QEMU_LIFETIME_S)}
    try:
        result = run_nmcm("apply", manifest, "--out", tmp_path / "out", env=env)
        assert result.code == 0, result.output
    finally:
        run_nmcm("down", manifest, env=env)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    (measured,) = metrics["nodes"]
    counts = measured["instructions"]
    assert counts["samples"] == entry.samples
    assert counts["layer_types"] == [layer.kind.label for layer in entry.ir.layers]
    assert (
        tuple(counts["forward"]),
        tuple(counts["backward"]),
        counts["loss"],
        counts["optimizer"],
    ) == (calibrated.forward, calibrated.backward, calibrated.loss, calibrated.step)


# --- refusals ------------------------------------------------------------------------------------


def corrupted(folder: Path, change: str) -> Path:
    """A suite of one small entry written by write_suite, then damaged: ``magic`` (bad magic),
    ``bounds`` (the entry's blob runs past the end; CRC recomputed, so the bounds check is what
    refuses it), ``crc`` (a byte of the blob flipped)."""
    entry = cal.SuiteEntry(inline_ir([1, 8, 8], MLP), 2)
    path = folder / change / cal.SUITE_NAME
    cal.write_suite([entry], path)
    data = bytearray(path.read_bytes())
    if change == "magic":
        data[0:4] = b"NMCX"
    elif change == "bounds":
        offset = cal.HEADER.size + 4  # entry 0's blob size
        struct.pack_into("<I", data, offset, len(data))
        struct.pack_into("<I", data, len(data) - 4, zlib.crc32(data[:-4]) & 0xFFFFFFFF)
    else:
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("change", "line"),
    [
        ("magic", "(bad-magic): not a calibration suite (magic is not NMCS)"),
        ("bounds", "(malformed): blob runs past the end of the suite [entry 0]"),
        ("crc", "(corrupt): CRC mismatch: the suite is corrupt"),
    ],
)
def test_a_corrupt_suite_is_one_fatal_line_and_a_non_zero_exit(
    tmp_path: Path, state: Path, change: str, line: str
) -> None:
    line = "fatal: calibration suite refused " + line
    image = cal.build_image(corrupted(tmp_path, change), "cortex-m4")
    with pytest.raises(cal.CalibrationError) as caught:
        cal.run_image(image, timeout_s=60)
    assert caught.value.returncode == 1
    assert line in caught.value.log.splitlines()
    assert line in caught.value.message  # the log's tail is in the message
    assert "HardFault" not in caught.value.log and "calibrate entry=" not in caught.value.log


def test_measure_raises_when_the_image_refuses_an_entry(state: Path) -> None:
    """A model the firmware cannot hold (33 layers, one above its fixed capacity) builds into a
    suite, and the image refuses its blob: measure raises with the fatal line."""
    layers = [{"type": "flatten"}]
    for _ in range(16):
        layers += [{"type": "linear", "out_features": 4}, {"type": "relu"}]
    entries = [
        cal.SuiteEntry(inline_ir([1, 8, 8], MLP), 2),
        cal.SuiteEntry(inline_ir([3], layers), 2),
    ]
    with pytest.raises(cal.CalibrationError) as caught:
        cal.measure(entries, "cortex-m7", timeout_s=60)
    assert caught.value.returncode == 1
    assert "fatal: calibration entry 1: blob refused (too-large)" in caught.value.message


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (cal.SuiteEntry(inline_ir([4], [{"type": "linear", "out_features": 3}]), 0), "samples"),
        (cal.SuiteEntry(inline_ir([1, 4, 4], [{"type": "relu"}]), 2), "output is shaped"),
        (cal.SuiteEntry(inline_ir([4], [{"type": "relu"}]), 2, loss="nll"), "loss 'nll'"),
        (cal.SuiteEntry(inline_ir([4], [{"type": "relu"}]), 2, lr=float("inf")), "finite"),
    ],
)
def test_entries_the_image_cannot_run_are_refused_before_building(
    tmp_path: Path, entry: cal.SuiteEntry, message: str
) -> None:
    with pytest.raises(ModelError, match=message):
        cal.write_suite([entry], tmp_path / cal.SUITE_NAME)
    assert not (tmp_path / cal.SUITE_NAME).exists()
