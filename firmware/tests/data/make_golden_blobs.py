"""Write the *.blob files here: stage blobs from the real model compiler, for the C++ tests.

Run from the repository root after a change of the blob format or of the memory planner:
    PYTHONPATH=. .venv/bin/python firmware/tests/data/make_golden_blobs.py
The blobs only need to be valid (the C++ tests fuzz and run them); any planner's output will do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nmcm_deploy.compiler.blob import write_blob
from nmcm_deploy.compiler.inline import inline_ir
from nmcm_deploy.compiler.memory import plan_stage

DIGITS_CNN = [
    {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel_size": 2},
    {"type": "flatten"},
    {"type": "linear", "out_features": 10},
    {"type": "softmax"},
]
SMALL_MLP = [
    {"type": "linear", "out_features": 12},
    {"type": "relu"},
    {"type": "linear", "out_features": 5},
]


def blob(
    spec: list[dict[str, object]],
    shape: list[int],
    first: int,
    last: int,
    stage: int,
    stages: int,
    micro_batch: int,
    slots: int,
) -> bytes:
    ir = inline_ir(shape, spec)
    plan = plan_stage(
        ir,
        first,
        last,
        micro_batch=micro_batch,
        slots=slots,
        momentum=True,
        stage_index=stage,
        stage_count=stages,
    )
    # The same weights for a tensor whichever stage holds it: seeded by the layer's model index.
    weights = [
        (0.3 * np.random.default_rng(first + t.layer).standard_normal(t.shape)).astype(np.float32)
        for t in plan.tensors
    ]
    layers = ir.layers[first : last + 1]
    return write_blob(layers, tuple(range(first, last + 1)), plan, weights, ir.model_hash())


def main() -> None:
    blobs = {
        # The digits CNN whole, and split after flatten with 2 slots (micro-batches of 4).
        "cnn_whole": blob(DIGITS_CNN, [1, 8, 8], 0, 5, 0, 1, 4, 2),
        "cnn_stage0": blob(DIGITS_CNN, [1, 8, 8], 0, 3, 0, 2, 4, 2),
        "cnn_stage1": blob(DIGITS_CNN, [1, 8, 8], 4, 5, 1, 2, 4, 2),
        "mlp_whole": blob(SMALL_MLP, [16], 0, 2, 0, 1, 8, 1),
    }
    for name, data in blobs.items():
        (Path(__file__).parent / f"{name}.blob").write_bytes(data)


if __name__ == "__main__":
    main()
