"""The stage planner against the alternatives, under the cost model: for each example model and
set of nodes, the planner's modelled epoch beside the best and the worst manual split (every split
in every node order that fits), the single best node, and the balance limit (the whole model's
compute shared by all nodes in proportion to their speed, no link and no bubble: a lower bound
no split reaches). Beside them, the planner with `micro_batches: auto` (the count it chose in
brackets). Then how long planning a large cluster takes.

    .venv/bin/python bench/planner.py

Epoch times are the model's (nmcm_deploy/costs/); planning times are the host clock.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nmcm_deploy.compiler.cluster import build_model, plan_pipeline  # noqa: E402
from nmcm_deploy.compiler.ir import ModelIR  # noqa: E402
from nmcm_deploy.costs import model, planner  # noqa: E402
from nmcm_deploy.errors import ModelError  # noqa: E402
from nmcm_deploy.manifest import Manifest, load_manifest  # noqa: E402
from tests.cluster_helpers import write_manifest  # noqa: E402
from tests.test_planner import MLP, WIDE_CNN, manual_epochs  # noqa: E402

TRAIN, TEST = 1438, 359
MODELS = {"digits MLP": (MLP, [64]), "digits CNN": (None, None), "wide CNN": (WIDE_CNN, None)}
NODE_SETS = [
    ("f413", "h7a3"),
    ("f413", "f413b"),
    ("h7a3", "h7a3b"),
    ("f413", "f413b", "f413c"),
    ("h7a3", "h7a3b", "f413"),
]


def balance_limit(manifest_path: Path) -> float:
    """The whole model's compute per epoch on each node alone, shared in proportion to speed."""
    manifest = load_manifest(manifest_path)
    _, ir = build_model(manifest)
    rates = 0.0
    for node in manifest.nodes:
        alone = plan_pipeline(manifest, ir, [(node.name, 0, len(ir.layers) - 1)])
        est = model.estimate(alone, manifest.training, TRAIN, TEST)
        rates += 1.0 / est.nodes[0].compute_s
    return 1.0 / rates


def fmt(seconds: float | None) -> str:
    return f"{'-':>9s}" if seconds is None else f"{seconds:9.2f}"


def large_cluster(folder: Path, nodes: int, layers: int) -> Path:
    doc = yaml.safe_load((ROOT / "manifests" / "quickstart.yaml").read_text())
    doc["spec"]["nodes"] = [
        {
            "name": f"n{i}",
            "mcu": "stm32f413zh" if i % 2 == 0 else "stm32h7a3zi",
            "w5500": {"ip": f"192.168.50.{11 + i}", "mac": f"02:4e:4d:00:00:{i + 1:02x}"},
        }
        for i in range(nodes)
    ]
    doc["spec"]["stages"] = "auto"
    doc["spec"]["model"]["input"] = [64]
    body = [{"type": "linear", "out_features": 256}, {"type": "relu"}] * (layers // 2 - 1)
    doc["spec"]["model"]["layers"] = [*body, {"type": "linear", "out_features": 10}]
    doc["spec"]["model"]["layers"].append({"type": "softmax"})
    doc["spec"]["training"]["micro_batches"] = 4
    path = folder / f"large-{nodes}-{layers}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    print("modelled epoch, seconds (micro-batches 4, batch 16, digits: 1438 + 359 samples)\n")
    header = f"{'model':12s} {'nodes':24s} {'planner':>9s} {'best man.':>9s} {'worst man.':>10s}"
    print(header + f" {'best node':>9s} {'limit':>9s} {'auto m':>13s}  planner's split")
    for label, (layers, shape) in MODELS.items():
        for nodes in NODE_SETS:
            path = write_manifest(
                tmp,
                name=f"b{len(nodes)}",
                stages=[(n, 0, 0) for n in nodes],
                stages_auto=True,
                layers=layers,
                input_shape=shape,
                micro_batches=4,
            )
            manual = manual_epochs(path)
            manifest = load_manifest(path)
            _, ir = build_model(manifest)
            singles = [v for k, v in manual.items() if len(k) == 1]
            try:
                plan = planner.plan_stages(manifest, ir, TRAIN, TEST)
                best, split = plan.best.epoch_s, planner_split(plan.best.pipeline)
            except Exception as exc:  # nothing fits these nodes
                best, split = None, f"({exc.__class__.__name__}: nothing fits)"
            print(
                f"{label:12s} {'+'.join(nodes):24s} {fmt(best)} "
                f"{fmt(min(manual.values()) if manual else None)} "
                f"{fmt(max(manual.values()) if manual else None):>10s} "
                f"{fmt(min(singles) if singles else None)} {fmt(balance_limit(path))} "
                f"{auto_micro_batches(manifest, ir):>13s}  {split}"
            )
    print("\nplanning time, host clock (the search and the ranking of its shortlist):")
    for nodes, layers in ((8, 10), (16, 20), (64, 30)):
        path = large_cluster(tmp, nodes, layers)
        manifest = load_manifest(path)
        _, ir = build_model(manifest)
        started = time.perf_counter()
        plan = planner.plan_stages(manifest, ir, TRAIN, TEST)
        took = time.perf_counter() - started
        print(
            f"  {nodes:3d} nodes (F413 and H7A3), {layers} layers: {took:5.2f} s, "
            f"{len(plan.best.pipeline)} stages, {len(plan.unused)} nodes unused, "
            f"{'every split ranked' if plan.exhaustive else f'{plan.searched} ranked'}"
        )


def auto_micro_batches(manifest: Manifest, ir: ModelIR) -> str:
    """The planner's epoch with `micro_batches: auto`, and the count it chose."""
    auto = replace(manifest, training=replace(manifest.training, micro_batches_auto=True))
    try:
        chosen = planner.resolve_manifest(auto, ir)
    except ModelError:
        return "-"
    plan = planner.plan_stages(chosen, ir, TRAIN, TEST)
    return f"{plan.best.epoch_s:.2f} (m={chosen.training.micro_batches})"


def planner_split(pipeline: tuple[tuple[str, int, int], ...]) -> str:
    return " -> ".join(f"{n}[{a}-{b}]" for n, a, b in pipeline)


if __name__ == "__main__":
    main()
