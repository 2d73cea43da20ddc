"""Instructions per multiply-accumulate of the layer kernels as they are built for the MCUs:
conv2d and linear per MAC, maxpool2d and relu per input element, forward and backward together,
and the whole training step per MAC. They are measured under QEMU (`-icount shift=0`, the
calibration image: firmware/apps/calibrate-qemu) on the Cortex-M4 and Cortex-M7 builds, for one
training step of 16 samples of three models:
- the quick-start CNN;
- the digits MLP;
- a larger CNN (16 channels, 3x3).

The columns put each figure of the kernels as they are ("now") beside the naive kernels they
replaced ("naive": the firmware of commit NAIVE, exported from git and measured the same way),
issue 11's aim (3 per MAC, 6 per element, 4 per MAC for the step) and the limit (one FMA per MAC,
one instruction per element).

    .venv/bin/python bench/arm_kernels.py

Source of every figure: QEMU instructions. The MACs and elements are the kernels' own loop counts
(``useful_macs`` in nmcm_deploy/costs/features.py): padding skipped, so a product with a
zero that a kernel makes anyway counts against it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from nmcm_deploy.compiler.inline import inline_ir  # noqa: E402
from nmcm_deploy.compiler.ir import LayerKind, numel  # noqa: E402
from nmcm_deploy.compiler.memory import alias_groups  # noqa: E402
from nmcm_deploy.costs.features import Call, Direction, useful_macs  # noqa: E402
from nmcm_deploy.costs.measure import CORES, EntryInstructions, SuiteEntry, measure  # noqa: E402

SAMPLES = 16
NAIVE = "1a30b49"  # the last commit with the naive (untiled) kernels
PER_MAC = {LayerKind.CONV2D, LayerKind.LINEAR}
PER_ELEMENT = {LayerKind.MAXPOOL2D, LayerKind.RELU}
AIM = {"mac": 3.0, "element": 6.0, "step": 4.0}


def manifest_layers(path: Path) -> tuple[list[int], list[dict[str, object]]]:
    model = yaml.safe_load(path.read_text())["spec"]["model"]
    return list(model["input"]), list(model["layers"])


def models() -> dict[str, tuple[list[int], list[dict[str, object]]]]:
    wide = [
        {"type": "conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1},
        {"type": "relu"},
        {"type": "conv2d", "out_channels": 16, "kernel_size": 3, "padding": 1},
        {"type": "relu"},
        {"type": "maxpool2d", "kernel_size": 2},
        {"type": "flatten"},
        {"type": "linear", "out_features": 10},
        {"type": "softmax"},
    ]
    return {
        "quick-start CNN": manifest_layers(ROOT / "manifests" / "quickstart.yaml"),
        "digits MLP": manifest_layers(
            ROOT / "manifests" / "examples" / "digits-mlp-f413-single.yaml"
        ),
        "CNN 16ch 3x3": ([1, 8, 8], wide),
    }


def macs(measured: EntryInstructions) -> list[int]:
    """Per layer, the MACs of its forward and backward (the backward without the input gradient
    where the kernel skips it: the first layers of the model)."""
    layers = measured.entry.ir.layers
    first = set(alias_groups(layers)[0])
    return [
        sum(
            useful_macs(Call(layer, direction, measured.samples, input_grad=i not in first))
            for direction in Direction
        )
        for i, layer in enumerate(layers)
    ]


@contextmanager
def naive_firmware() -> Iterator[None]:
    """NMCM_FIRMWARE_DIR pointing at the firmware of commit NAIVE, exported from git."""
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", NAIVE, "firmware"],
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SystemExit(
            f"the naive kernels need a git checkout with commit {NAIVE}: {exc}"
        ) from None
    with tempfile.TemporaryDirectory(prefix="nmcm-naive-") as folder:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(folder, filter="data")
        before = os.environ.get("NMCM_FIRMWARE_DIR")
        os.environ["NMCM_FIRMWARE_DIR"] = str(Path(folder) / "firmware")
        try:
            yield
        finally:
            if before is None:
                del os.environ["NMCM_FIRMWARE_DIR"]
            else:
                os.environ["NMCM_FIRMWARE_DIR"] = before


def per_kind(measured: EntryInstructions) -> tuple[dict[LayerKind, list[int]], int]:
    """Instructions and work (MACs or input elements) per layer kind, and the step's MACs."""
    kinds: dict[LayerKind, list[int]] = defaultdict(lambda: [0, 0])
    layer_macs = macs(measured)
    for layer, counts, mac in zip(
        measured.entry.ir.layers, measured.layers, layer_macs, strict=True
    ):
        work = mac if layer.kind in PER_MAC else numel(layer.in_shape) * SAMPLES
        kinds[layer.kind][0] += counts.forward + counts.backward
        kinds[layer.kind][1] += work
    return kinds, sum(layer_macs)


def main() -> None:
    entries = {
        name: SuiteEntry(
            inline_ir(shape, layers),
            samples=SAMPLES,
            momentum=0.9,
            weight_decay=0.0,
            loss="cross_entropy",
            seed=0,
        )
        for name, (shape, layers) in models().items()
    }
    print(
        f"instructions per MAC (conv2d, linear) or per input element (maxpool2d, relu), forward + "
        f"backward, one training step of {SAMPLES} samples [qemu instructions]; naive: the kernels "
        f"of commit {NAIVE}\n"
    )
    header = (
        f"{'model':16s} {'core':10s} {'layer':10s} {'instructions':>13s} {'MACs/elements':>14s} "
        f"{'naive':>7s} {'now':>7s} {'aim':>5s} {'limit':>6s}"
    )
    print(header)
    for core in CORES:
        calibration = measure(list(entries.values()), core)
        with naive_firmware():
            naive = measure(list(entries.values()), core)
        for name, measured, before in zip(entries, calibration.entries, naive.entries, strict=True):
            kinds, total_macs = per_kind(measured)
            naive_kinds, _ = per_kind(before)
            for kind in (*sorted(PER_MAC, key=str), *sorted(PER_ELEMENT, key=str)):
                if kind not in kinds:
                    continue
                instructions, work = kinds[kind]
                aim = AIM["mac" if kind in PER_MAC else "element"]
                print(
                    f"{name:16s} {core:10s} {kind.label:10s} {instructions:13,d} {work:14,d} "
                    f"{naive_kinds[kind][0] / work:7.2f} {instructions / work:7.2f} {aim:5.1f} "
                    f"{1.0:6.1f}"
                )
            print(
                f"{name:16s} {core:10s} {'step':10s} {measured.per_step:13,d} {total_macs:14,d} "
                f"{before.per_step / total_macs:7.2f} {measured.per_step / total_macs:7.2f} "
                f"{AIM['step']:5.1f} {1.0:6.1f}"
            )
        print()


if __name__ == "__main__":
    main()
