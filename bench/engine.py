"""Training-step time of the NMCM engine on the host against PyTorch eager on the CPU.

    .venv/bin/python bench/engine.py [--repeats 5] [--json]

For the two reference models (digits MLP 64-32-10, digits CNN) at batch 1 and batch 32: the
time of one SGD step (forward, loss, backward, update with momentum and weight decay) in the
Release build of nmcm-train (timed inside the program, around its training loop) and in PyTorch
eager with one thread (timed around the same loop in Python), best of --repeats runs. Also the
multiply-accumulates per layer of one forward and one backward pass.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nmcm_deploy.compiler.inline import inline_ir
from nmcm_deploy.compiler.ir import LayerKind, ModelIR
from nmcm_deploy.runtime import host_trainer
from tests.engine_helpers import (
    DIGITS_CNN,
    DIGITS_MLP,
    reference_loss,
    stage_blob,
    torch_model,
)

MODELS = {"mlp": ([64], DIGITS_MLP), "cnn": ([1, 8, 8], DIGITS_CNN)}
STEPS = {1: 4000, 32: 1000}
LR, MOMENTUM, WEIGHT_DECAY = 0.01, 0.9, 1e-4


def data(shape: list[int], n: int = 512) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, *shape), dtype=np.float32), rng.integers(0, 10, n).astype(np.int32)


def batches(n: int, batch: int, steps: int) -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    order = np.concatenate([rng.permutation(n) for _ in range(steps * batch // n + 1)])
    return [order[i * batch : (i + 1) * batch] for i in range(steps)]


def engine_step_s(ir: ModelIR, x: np.ndarray, y: np.ndarray, batch: int, steps: int) -> float:
    blob = stage_blob(ir, torch_model(ir, 0), micro_batch=batch)
    job = host_trainer.Job(
        x=x,
        y=y,
        steps=batches(len(x), batch, steps),
        lr=LR,
        momentum=MOMENTUM,
        weight_decay=WEIGHT_DECAY,
    )
    return host_trainer.train(blob, job).seconds / steps


def torch_step_s(ir: ModelIR, x: np.ndarray, y: np.ndarray, batch: int, steps: int) -> float:
    model = torch_model(ir, 0)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    plan = [torch.from_numpy(b.astype(np.int64)) for b in batches(len(x), batch, steps)]

    def run(indices: list[torch.Tensor]) -> None:
        for index in indices:
            opt.zero_grad()
            reference_loss(model, xt[index], yt[index], "cross_entropy").backward()
            opt.step()

    run(plan[:50])  # warm-up: allocator, dispatcher caches
    start = time.perf_counter()
    run(plan)
    return (time.perf_counter() - start) / steps


def macs(ir: ModelIR) -> list[tuple[str, int, int]]:
    """Per layer: multiply-accumulates of one sample's forward and backward pass. Backward does
    the weight gradient (as many MACs as forward) and the input gradient (as many again) except
    for the first layer, whose input gradient nobody needs."""
    rows = []
    for i, layer in enumerate(ir.layers):
        forward = layer.macs()
        backward = forward * (1 if i == 0 else 2)
        if layer.kind not in (LayerKind.LINEAR, LayerKind.CONV2D):
            backward = 0
        rows.append((layer.describe(), forward, backward))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    host_trainer.trainer_binary()  # build before timing anything

    results = []
    for name, (shape, spec) in MODELS.items():
        ir = inline_ir(shape, spec)
        x, y = data(shape)
        for batch, steps in STEPS.items():
            engine = min(engine_step_s(ir, x, y, batch, steps) for _ in range(args.repeats))
            eager = min(torch_step_s(ir, x, y, batch, steps) for _ in range(args.repeats))
            results.append(
                {
                    "model": name,
                    "batch": batch,
                    "engine_us": engine * 1e6,
                    "torch_us": eager * 1e6,
                    "speedup": eager / engine,
                }
            )
    layer_macs = {name: macs(inline_ir(shape, spec)) for name, (shape, spec) in MODELS.items()}
    if args.json:
        print(json.dumps({"steps": results, "macs": layer_macs}, indent=2))
        return

    print(
        f"training step, SGD momentum {MOMENTUM} weight decay {WEIGHT_DECAY}; "
        f"torch {torch.__version__} eager, 1 thread; best of {args.repeats}"
    )
    header = ("model", "batch", "engine us/step", "torch us/step", "torch/engine")
    print(f"{header[0]:6} {header[1]:>5} {header[2]:>15} {header[3]:>14} {header[4]:>13}")
    for r in results:
        print(
            f"{r['model']:6} {r['batch']:>5} {r['engine_us']:>15.1f} {r['torch_us']:>14.1f}"
            f" {r['speedup']:>12.1f}x"
        )
    for name, rows in layer_macs.items():
        print(f"\n{name}: multiply-accumulates per sample")
        print(f"  {'layer':28} {'forward':>9} {'backward':>9}")
        for describe, forward, backward in rows:
            print(f"  {describe:28} {forward:>9} {backward:>9}")
        total_f = sum(r[1] for r in rows)
        total_b = sum(r[2] for r in rows)
        step = 32 * (total_f + total_b)
        print(f"  {'total':28} {total_f:>9} {total_b:>9}   (one step at batch 32: {step})")


if __name__ == "__main__":
    main()
