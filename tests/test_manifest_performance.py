"""Validation of big inline-layer manifests stays light: no heavy imports, linear work.

The wall time of the 64-node manifest is measured by bench/validate_scale.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nmcm_deploy.manifest import validate_file

ROOT = Path(__file__).resolve().parents[1]
NODES = 64


def big_manifest(nodes: int = NODES) -> str:
    rows = ["apiVersion: nmcm.dev/v1alpha1", "kind: Cluster", "metadata: {name: big}", "spec:"]
    rows += ["  model:", "    input: [64]", "    layers:"]
    rows += ["      - {type: linear, out_features: 32}", "      - {type: relu}"] * (nodes - 1)
    rows += ["      - {type: linear, out_features: 10}", "      - {type: softmax}"]
    rows += [
        "  dataset: {name: sklearn-digits}",
        "  training: {epochs: 1, batch_size: 16, micro_batches: 4, optimizer: {lr: 0.1}}",
        "  network: {subnet: 10.0.0.0/24, gateway: 10.0.0.1, coordinator: 10.0.0.2}",
        "  nodes:",
    ]
    for i in range(nodes):
        mcu, board = (
            ("stm32f413zh", "nucleo-f413zh") if i % 2 else ("stm32h7a3zi", "nucleo-h7a3zi-q")
        )
        rows += [
            f"    - name: n{i}",
            f"      mcu: {mcu}",
            f"      board: {board}",
            f'      probe: {{uid: "UID{i:04d}"}}',
            f'      w5500: {{ip: 10.0.0.{i + 10}, mac: "02:00:00:00:00:{i:02x}"}}',
        ]
    rows.append("  stages:")
    rows += [f"    - {{node: n{i}, layers: [{2 * i}, {2 * i + 1}]}}" for i in range(nodes)]
    return "\n".join(rows) + "\n"


def test_validating_a_big_manifest_imports_no_heavy_library(tmp_path: Path) -> None:
    """An inline-layer manifest validates without torch, numpy or scipy (seconds of import)."""
    path = tmp_path / "big.yaml"
    path.write_text(big_manifest())
    code = (
        "import sys\n"
        "from nmcm_deploy.manifest import validate_file\n"
        "problems = validate_file(sys.argv[1])\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'scipy') if m in sys.modules)\n"
        "print(len(problems), ','.join(heavy) or '-')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "-"]


def _calls_to_validate(path: Path) -> int:
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        problems = validate_file(path)
    finally:
        sys.setprofile(None)
    assert problems == []
    return calls


@pytest.mark.parametrize("nodes", [8, 16, 32])
def test_validation_work_grows_linearly_with_the_nodes(tmp_path: Path, nodes: int) -> None:
    """Doubling the nodes (and the layers) at most doubles validate's work, give or take.

    The work is counted in function calls, which does not depend on the machine's speed; the
    wall time of the 64-node manifest as a whole process is bench/validate_scale.py's figure.
    """
    small = tmp_path / "small.yaml"
    large = tmp_path / "large.yaml"
    small.write_text(big_manifest(nodes))
    large.write_text(big_manifest(2 * nodes))
    _calls_to_validate(small)  # caches (profiles, schema) filled before counting
    ratio = _calls_to_validate(large) / _calls_to_validate(small)
    assert ratio < 2.2, f"{2 * nodes} nodes cost {ratio:.2f}x the work of {nodes}"
