"""The cost model against QEMU over many architectures it was not fitted to, beside the naive
alternative (instructions proportional to multiply-accumulates, fitted to the same data).

    .venv/bin/python bench/cost_model.py [--models 64] [--seed 7]

For each core: the models are drawn from the calibration families with a seed of their own, their
training steps measured under QEMU by the calibration image (firmware/apps/calibrate-qemu), and
each layer (forward + backward) and each whole step compared with the shipped weights'
prediction. Figures are QEMU instructions (`-icount shift=0`) and the model's instructions.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nmcm_deploy.costs import calibrate  # noqa: E402
from nmcm_deploy.costs import coefficients as coef  # noqa: E402
from nmcm_deploy.costs.features import Call, Direction, useful_macs  # noqa: E402
from nmcm_deploy.costs.measure import CORES, EntryInstructions, measure  # noqa: E402


def weights_of(c: coef.Coefficients, piece: calibrate.Piece) -> dict[str, float]:
    if piece.kind in ("loss", "step"):
        return c.loss if piece.kind == "loss" else c.step
    return c.layer(piece.kind, piece.direction)


def macs(entry: EntryInstructions) -> int:
    """The multiply-accumulates of one training step, padding skipped (features.useful_macs)."""
    layers = entry.entry.ir.layers
    grads = calibrate._input_grads(entry.entry.ir)
    return sum(
        useful_macs(Call(layer, direction, entry.samples, input_grad=grads[i]))
        for i, layer in enumerate(layers)
        for direction in Direction
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=64)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    suite = calibrate._suite(args.seed, args.models)
    print(f"{args.models} models drawn with seed {args.seed} (the fit used seed 1)\n")
    for core in CORES:
        shipped = coef.shipped(core)
        measured = measure(suite, core)
        # The naive model: one figure per MAC, fitted (least squares) to these very steps.
        total_macs = [macs(e) for e in measured.entries]
        per_mac = sum(e.per_step for e in measured.entries) / max(1.0, sum(total_macs))
        step_model, step_naive = [], []
        by_kind: dict[str, list[float]] = {}
        for entry, entry_macs in zip(measured.entries, total_macs, strict=True):
            layers: dict[int, list[float]] = {}
            predicted = 0.0
            for m in calibrate.observations(entry):
                p = coef.predict(weights_of(shipped, m.piece), m.observation.features)
                predicted += p
                if m.layer is not None:
                    got = layers.setdefault(m.layer, [0.0, 0.0])
                    got[0] += p
                    got[1] += m.observation.instructions
            step_model.append(abs(predicted - entry.per_step) / entry.per_step)
            step_naive.append(abs(per_mac * entry_macs - entry.per_step) / entry.per_step)
            for index, (got, want) in layers.items():
                kind = entry.layers[index].layer.kind.label
                by_kind.setdefault(kind, []).append(abs(got - want) / want)
        print(f"{core} ({measured.image.machine}), per training step:")
        print(f"  {'':28s}{'mean error':>12s}{'max error':>12s}")
        print(
            f"  {'cost model (shipped)':28s}{statistics.mean(step_model):>12.2%}"
            f"{max(step_model):>12.2%}"
        )
        print(
            f"  {'MACs x one fitted figure':28s}{statistics.mean(step_naive):>12.2%}"
            f"{max(step_naive):>12.2%}"
        )
        print("  per layer (forward + backward), cost model:")
        for kind, errors in sorted(by_kind.items()):
            print(
                f"    {kind:12s} {len(errors):4d} layers  mean {statistics.mean(errors):6.2%}  "
                f"max {max(errors):6.2%}"
            )
        print()


if __name__ == "__main__":
    main()
