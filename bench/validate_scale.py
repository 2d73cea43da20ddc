"""How long `nmcm validate` takes, as a whole process, on a 64-node inline-layer manifest.

Prints the time of the whole command beside the floor set by the interpreter's own start-up and
the import of the CLI, so the share spent on checking the manifest is visible.

    .venv/bin/python bench/validate_scale.py [--nodes 64] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def manifest_text(nodes: int) -> str:
    """A valid manifest: an MLP of `nodes` linear+relu pairs, one pair per node."""
    lines = [
        "apiVersion: nmcm.dev/v1alpha1",
        "kind: Cluster",
        "metadata:",
        f"  name: scale-{nodes}",
        "spec:",
        "  model:",
        "    input: [64]",
        "    layers:",
    ]
    for _ in range(nodes):
        lines += ["      - {type: linear, out_features: 32}", "      - {type: relu}"]
    lines += [
        "  dataset: {name: sklearn-digits, test_fraction: 0.2}",
        "  training:",
        "    epochs: 1",
        "    batch_size: 16",
        "    loss: mse",
        "    optimizer: {type: sgd, lr: 0.01}",
        "  network: {subnet: 10.0.0.0/16, gateway: 10.0.0.1, port: 6000, coordinator: 10.0.0.2}",
        "  nodes:",
    ]
    for i in range(nodes):
        mcu, board = (
            ("stm32f413zh", "nucleo-f413zh") if i % 2 == 0 else ("stm32h7a3zi", "nucleo-h7a3zi-q")
        )
        lines += [
            f"    - name: node-{i}",
            f"      mcu: {mcu}",
            f"      board: {board}",
            f"      w5500: {{ip: 10.0.{1 + i // 200}.{10 + i % 200},",
            f'               mac: "02:00:00:00:{i // 256:02x}:{i % 256:02x}"}}',
        ]
    lines.append("  stages:")
    for i in range(nodes):
        lines.append(f"    - {{node: node-{i}, layers: [{2 * i}, {2 * i + 1}]}}")
    return "\n".join(lines) + "\n"


def timed(cmd: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=64)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"scale-{args.nodes}.yaml"
        path.write_text(manifest_text(args.nodes))
        rows = [
            ("python -c pass (interpreter floor)", [sys.executable, "-c", "pass"]),
            (
                "import nmcm_deploy.cli (start-up floor)",
                [sys.executable, "-c", "import nmcm_deploy.cli"],
            ),
            (
                f"nmcm validate ({args.nodes} nodes)",
                [sys.executable, "-m", "nmcm_deploy", "validate", str(path)],
            ),
        ]
        print(f"{'what':45} {'min s':>8} {'median s':>9}")
        for label, cmd in rows:
            t = timed(cmd, args.runs)
            print(f"{label:45} {min(t):8.3f} {statistics.median(t):9.3f}")


if __name__ == "__main__":
    main()
