"""Calibration: measure the shipped kernels over a sweep of shapes and fit the cost model's weights.

Two suites of small models, drawn with fixed seeds from the same families (MLPs with and without
a final softmax, CNNs of one and two convolutions, with and without padding and stride,
cross-entropy and MSE, SGD with and without momentum): ``fit_suite`` is what the weights are
fitted to, ``check_suite`` holds architectures the fit never saw, to tell how well the model
predicts (tests/test_cost_accuracy.py, bench/cost_model.py). Every layer of every model gives an
observation per direction; a backward that does not run (a softmax fused into the loss, a
flatten) gives none.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from nmcm_deploy.compiler.inline import inline_ir
from nmcm_deploy.compiler.ir import LayerKind, ModelIR
from nmcm_deploy.compiler.memory import alias_groups
from nmcm_deploy.costs.coefficients import Coefficients, Fit, Observation, Weights, fit, predict
from nmcm_deploy.costs.features import (
    Call,
    Direction,
    features,
    loss_features,
    loss_kernel,
    step_features,
)
from nmcm_deploy.costs.measure import (
    Calibration,
    EntryInstructions,
    SuiteEntry,
    board_entries,
    measure,
    measure_board,
)

if TYPE_CHECKING:
    from nmcm_deploy.flash.pyocd_session import FlashRequest

FIT_SEED = 1
CHECK_SEED = 2


def _mlp(rng: random.Random) -> tuple[list[int], list[dict[str, object]]]:
    f, h, c = rng.randint(4, 96), rng.randint(4, 64), rng.randint(2, 16)
    layers: list[dict[str, object]] = [
        {"type": "linear", "out_features": h, "bias": rng.random() < 0.8},
        {"type": "relu"},
        {"type": "linear", "out_features": c},
    ]
    if rng.random() < 0.7:
        layers.append({"type": "softmax"})
    return [f], layers


def _cnn(rng: random.Random) -> tuple[list[int], list[dict[str, object]]]:
    c, size = rng.randint(1, 3), rng.randint(6, 14)
    layers: list[dict[str, object]] = []
    for _ in range(rng.randint(1, 2)):
        k = rng.choice([1, 3, 3, 5])
        layers += [
            {
                "type": "conv2d",
                "out_channels": rng.randint(2, 8),
                "kernel_size": k,
                "stride": rng.choice([1, 1, 2]),
                "padding": rng.randint(0, k // 2),
            },
            {"type": "relu"},
        ]
    layers += [
        {"type": "maxpool2d", "kernel_size": rng.choice([2, 3]), "stride": rng.choice([1, 2])},
        {"type": "flatten"},
        {"type": "linear", "out_features": rng.randint(2, 12)},
        {"type": "softmax"},
    ]
    return [c, size, size], layers


def _suite(seed: int, count: int) -> list[SuiteEntry]:
    rng = random.Random(seed)
    entries: list[SuiteEntry] = []
    while len(entries) < count:
        family = _mlp if len(entries) % 2 == 0 else _cnn
        shape, layers = family(rng)
        try:
            ir = inline_ir(shape, layers)
        except Exception:  # a draw whose shapes do not chain (a window larger than its input)
            continue
        entries.append(
            SuiteEntry(
                ir,
                samples=rng.randint(1, 24),
                momentum=rng.choice([0.0, 0.9]),
                weight_decay=rng.choice([0.0, 0.0, 1e-4]),
                loss="mse" if rng.random() < 0.15 else "cross_entropy",
                seed=rng.randint(0, 1000),
            )
        )
    return entries


def fit_suite() -> list[SuiteEntry]:
    """The models the weights are fitted to."""
    return _suite(FIT_SEED, 200)


def check_suite() -> list[SuiteEntry]:
    """Models the fit never saw, from the same families: how well the model predicts."""
    return _suite(CHECK_SEED, 16)


# --- observations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """What one weight set covers: a layer kind in one direction, the loss, or the step."""

    kind: str  # a layer kind's label, "loss" or "step"
    direction: str = ""  # "forward" | "backward" for layers

    @property
    def label(self) -> str:
        return f"{self.kind} {self.direction}".strip()


@dataclass(frozen=True)
class Measured:
    """One piece of a measured step: which weights it is for, the layer (None for the loss and
    the step), its features and the instructions it took."""

    piece: Piece
    layer: int | None
    observation: Observation


def _input_grads(ir: ModelIR) -> list[bool]:
    group0 = set(alias_groups(ir.layers)[0])
    return [i not in group0 for i in range(len(ir.layers))]


def observations(measured: EntryInstructions) -> list[Measured]:
    """Every piece of one measured training step, with its features (one micro-batch of
    ``samples``, the whole model on one stage, as the calibration image runs it)."""
    entry, n = measured.entry, measured.samples
    ir = entry.ir
    softmax_last = ir.layers[-1].kind is LayerKind.SOFTMAX
    kernel = loss_kernel(entry.loss, softmax_last)
    grads = _input_grads(ir)
    out: list[Measured] = []
    for i, layer in enumerate(measured.layers):
        label = layer.layer.kind.label
        fwd = features(Call(layer.layer, Direction.FORWARD, n))
        out.append(Measured(Piece(label, "forward"), i, Observation(fwd, layer.forward)))
        fused = kernel == "probabilities" and i == len(ir.layers) - 1
        if fused:
            continue  # no backward runs: the loss gave the softmax's input its gradient
        bwd = features(Call(layer.layer, Direction.BACKWARD, n, input_grad=grads[i]))
        out.append(Measured(Piece(label, "backward"), i, Observation(bwd, layer.backward)))
    classes = ir.layers[-1].out_shape[0]
    loss = loss_features(n, classes, kernel)
    out.append(Measured(Piece("loss"), None, Observation(loss, measured.loss)))
    tensors = [(ly.weight_shape, ly.bias_shape) for ly in ir.layers]
    shapes = [s for pair in tensors for s in pair if s is not None]
    parameters = sum(_numel(s) for s in shapes)
    step = step_features(parameters, len(shapes), entry.momentum > 0, entry.weight_decay != 0)
    out.append(Measured(Piece("step"), None, Observation(step, measured.step)))
    return out


def _numel(shape: Sequence[int]) -> int:
    out = 1
    for d in shape:
        out *= d
    return out


# A backward whose part with this prefix runs the forward's own code: conv2d's input gradient at
# stride 1 is the forward's correlation (conv2d.cpp ``correlate``, the kernel flipped). That part
# takes the forward's weights (fitted on many more such calls) and the rest of the backward is
# fitted around it.
SHARED_FORWARD = {Piece("conv2d", "backward"): "din_"}


def fit_with_forward(observations: list[Observation], forward: Weights, prefix: str) -> Fit:
    """A backward's weights where the features named ``prefix`` + a forward feature weigh what
    that forward feature does; the others are fitted to what remains of each count."""
    shared = {f"{prefix}{name}": w for name, w in forward.items()}

    def part(o: Observation) -> float:
        return sum(shared.get(n, 0.0) * v for n, v in o.features.items() if n in shared)

    rest = [
        Observation(
            {n: v for n, v in o.features.items() if n not in shared}, o.instructions - part(o)
        )
        for o in observations
    ]
    kept = [o for o in rest if o.instructions > 0]
    weights = {**(fit(kept).weights if kept else {}), **shared}
    errors = [
        abs(predict(weights, o.features) - o.instructions) / o.instructions for o in observations
    ]
    return Fit(weights, len(observations), max(errors), sum(errors) / len(errors))


def fit_coefficients(calibration: Calibration, source: str) -> Coefficients:
    """Weights for every piece measured in ``calibration``."""
    grouped: dict[Piece, list[Observation]] = defaultdict(list)
    for measured in calibration.entries:
        for m in observations(measured):
            grouped[m.piece].append(m.observation)
    fits: dict[Piece, Fit] = {
        piece: fit(obs) for piece, obs in grouped.items() if piece not in SHARED_FORWARD
    }
    for piece, prefix in SHARED_FORWARD.items():
        if piece in grouped:
            forward = fits[Piece(piece.kind, "forward")].weights
            fits[piece] = fit_with_forward(grouped[piece], forward, prefix)
    layers: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for piece, result in fits.items():
        if piece.direction:
            layers[piece.kind][piece.direction] = result.weights
    return Coefficients(
        core=calibration.core,
        source=source,
        layers=dict(layers),
        loss=fits[Piece("loss")].weights,
        step=fits[Piece("step")].weights,
        quality={
            piece.label: {
                "points": result.points,
                "max_relative_error": round(result.max_relative_error, 4),
                "mean_relative_error": round(result.mean_relative_error, 4),
            }
            for piece, result in sorted(fits.items(), key=lambda item: item[0].label)
        },
    )


def calibrate_board(
    mcu_name: str,
    board: str,
    request: Callable[[Path], FlashRequest],
    *,
    step: Callable[[str], None] | None = None,
    run: Callable[..., Calibration] = measure_board,
) -> Coefficients:
    """Measure the fit suite's entries that fit the board in DWT cycles on a ``mcu_name`` board
    (flashed and read through the probe ``request`` names) and fit its cycle weights."""
    suite = board_entries(fit_suite(), mcu_name)
    calibration = run(suite, mcu_name, board, request, step=step)
    source = (
        f"dwt cycles on {board} ({mcu_name}): {len(suite)} models of the fit suite that fit its "
        f"SRAM (costs/calibrate.py), image {calibration.image.key[:12]}"
    )
    return replace(fit_coefficients(calibration, source), unit="cycles", mcu=mcu_name)


def calibrate_qemu(
    core: str,
    *,
    run: Callable[[Sequence[SuiteEntry], str], Calibration] = measure,
) -> Coefficients:
    """Measure the fit suite on ``core`` under QEMU and fit its weights."""
    suite = fit_suite()
    calibration = run(suite, core)
    source = (
        f"qemu instructions ({calibration.image.machine}, -icount shift=0): "
        f"{len(suite)} models of the fit suite (costs/calibrate.py), "
        f"image {calibration.image.key[:12]}"
    )
    return fit_coefficients(calibration, source)
