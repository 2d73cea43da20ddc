"""Sequential model parallelism against the pipelined (GPipe fill-and-drain) schedule, on real
simulated clusters: wall time of the training job and each node's idle fraction.

    .venv/bin/python bench/schedules.py [--epochs 2] [--micro-batches 4]

Each configuration is applied with `nmcm apply` in its own state directory, as a user would; the
figures come from the run's metrics.json. The lower bound printed beside them is GPipe's bubble:
with K stages and M micro-batches a perfectly balanced pipeline idles (K-1)/(M+K-1) of the time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster_helpers import write_manifest  # noqa: E402

CONFIGS = {
    2: [("f413", 0, 3), ("h7a3", 4, 5)],
    3: [("f413", 0, 0), ("h7a3", 1, 3), ("f413b", 4, 5)],
}


def run(
    tmp: Path, stages: list[tuple[str, int, int]], schedule: str, args: argparse.Namespace
) -> dict:  # type: ignore[type-arg]
    state = tmp / f"state-{len(stages)}-{schedule}"
    manifest = write_manifest(
        tmp,
        name=f"bench-{len(stages)}-{schedule}",
        stages=stages,
        epochs=args.epochs,
        batch_size=args.batch_size,
        micro_batches=args.micro_batches,
        schedule=schedule,
    )
    env = {**os.environ, "NMCM_STATE_DIR": str(state), "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "nmcm_deploy"]
    proc = subprocess.run(
        [*cmd, "apply", str(manifest), "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    subprocess.run([*cmd, "down", str(manifest)], env=env, capture_output=True, cwd=ROOT)
    if proc.returncode != 0:
        sys.exit(proc.stderr)
    metrics: dict[str, Any] = json.loads(proc.stdout)["metrics"]
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--micro-batches", type=int, default=4)
    args = parser.parse_args()
    print(
        f"digits CNN, {args.epochs} epoch(s), batch {args.batch_size}, "
        f"{args.micro_batches} micro-batches; sim nodes on {os.cpu_count()} cores"
    )
    header = f"{'K':>2} {'schedule':11} {'wall s':>8} {'per-node idle fraction':>36}"
    print(f"{header} {'bubble bound':>13}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for k, stages in CONFIGS.items():
            for schedule in ("sequential", "pipelined"):
                m = run(tmp, stages, schedule, args)
                fractions = []
                for n in m["nodes"]:
                    busy = n["compute_s"] + n["comm_s"] + n["idle_s"]
                    fractions.append(n["idle_s"] / busy if busy else 0.0)
                micro = args.micro_batches if schedule == "pipelined" else 1
                bound = (k - 1) / (micro + k - 1)
                idle = " ".join(f"{f:.2f}" for f in fractions)
                print(f"{k:>2} {schedule:11} {m['wall_time_s']:8.2f} {idle:>36} {bound:13.2f}")


if __name__ == "__main__":
    main()
