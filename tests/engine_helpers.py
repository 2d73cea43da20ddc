"""Helpers of the engine tests: one model both as IR (-> blob -> nmcm-train) and as a torch
nn.Sequential with the same initial weights, PyTorch's reference loop, and the comparisons.

Tolerances (never widened to make a test pass; a failure means a bug or a flipped discrete choice
to find):

* ``LAYER_RTOL = 2e-5`` for one layer's forward and every gradient, as the normwise relative error
  ``max|engine - torch| / max|torch|`` per tensor. Both sides compute the same sums of float32
  products in different orders (torch: blocked GEMM / oneDNN; the engine: its own loops). Each
  rounding is at most u = 2^-24 ≈ 6e-8 relative; over a sum of K terms with random signs the error
  grows like sqrt(K)·u (≈ 2e-6 for K = 1024, the longest sums here), and the maximum over a tensor
  is a few of those. 2e-5 leaves that margin and still catches any wrong term (a missing 1/B, a
  misrouted pool gradient or a wrong padding tap are O(1e-2) or more).
* ``TRAIN_RTOL = 1e-4`` for every weight tensor after 100+ SGD steps with momentum and weight
  decay: each step adds an update error of the size above, and momentum (0.9) sums about ten
  steps' worth, so the errors accumulate to at most ~100 per-step errors; the loss per step is
  compared at the same tolerance. The float64 run of the same loop is reported alongside, to show
  the engine is as close to the exact result as float32 PyTorch is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nmcm_deploy.compiler.blob import write_blob
from nmcm_deploy.compiler.inline import inline_ir
from nmcm_deploy.compiler.ir import Layer, LayerKind, ModelIR
from nmcm_deploy.compiler.memory import plan_stage
from nmcm_deploy.runtime import host_trainer

LAYER_RTOL = 2e-5
TRAIN_RTOL = 1e-4

Spec = list[dict[str, Any]]

DIGITS_MLP: Spec = [
    {"type": "linear", "out_features": 32},
    {"type": "relu"},
    {"type": "linear", "out_features": 10},
]
DIGITS_CNN: Spec = [
    {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel_size": 2},
    {"type": "flatten"},
    {"type": "linear", "out_features": 10},
    {"type": "softmax"},
]


def torch_layer(layer: Layer) -> nn.Module:
    """The nn.Module computing ``layer``; its parameters get torch's default init."""
    if layer.kind is LayerKind.LINEAR:
        return nn.Linear(layer.in_shape[0], layer.out_shape[0], bias=layer.bias)
    if layer.kind is LayerKind.CONV2D:
        return nn.Conv2d(
            layer.in_shape[0],
            layer.out_shape[0],
            layer.kernel,
            stride=layer.stride,
            padding=layer.padding,
            bias=layer.bias,
        )
    if layer.kind is LayerKind.MAXPOOL2D:
        return nn.MaxPool2d(layer.kernel, stride=layer.stride, padding=layer.padding)
    if layer.kind is LayerKind.RELU:
        return nn.ReLU()
    if layer.kind is LayerKind.FLATTEN:
        return nn.Flatten()
    return nn.Softmax(dim=1)


def torch_model(ir: ModelIR, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(*(torch_layer(layer) for layer in ir.layers))


def stage_blob(
    ir: ModelIR,
    model: nn.Sequential,
    *,
    first: int = 0,
    last: int | None = None,
    stage_index: int = 0,
    stage_count: int = 1,
    micro_batch: int = 8,
    slots: int = 1,
    momentum: bool = True,
) -> bytes:
    """The blob of layers first..last with the model's current weights, planned by memory.py."""
    last = len(ir.layers) - 1 if last is None else last
    plan = plan_stage(
        ir,
        first,
        last,
        micro_batch=micro_batch,
        slots=slots,
        momentum=momentum,
        stage_index=stage_index,
        stage_count=stage_count,
    )
    weights = [
        getattr(model[first + t.layer], t.role).detach().numpy().copy() for t in plan.tensors
    ]
    layers = ir.layers[first : last + 1]
    return write_blob(layers, tuple(range(first, last + 1)), plan, weights, ir.model_hash())


def parameters_in_blob_order(model: nn.Sequential) -> list[torch.Tensor]:
    """Weight then bias of each layer in order: the tensor order of a whole-model blob."""
    out: list[torch.Tensor] = []
    for module in model:
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            out.append(module.weight)
            if module.bias is not None:
                out.append(module.bias)
    return out


def reference_loss(
    model: nn.Sequential, x: torch.Tensor, y: torch.Tensor, loss: str
) -> torch.Tensor:
    """The loss of DESIGN.md: cross-entropy after a final softmax is nll(log(softmax)), computed
    stably as cross_entropy on the softmax's input; mse against one-hot targets."""
    if loss == "cross_entropy":
        if isinstance(model[-1], nn.Softmax):
            return F.cross_entropy(model[:-1](x), y)
        return F.cross_entropy(model(x), y)
    out = model(x)
    return F.mse_loss(out, F.one_hot(y, out.shape[1]).to(out.dtype))


def gradient_errors(model: nn.Sequential, grads: Sequence[np.ndarray]) -> dict[str, float]:
    """Relative error of each parameter gradient of the engine, keyed "weight grad"/"bias grad"."""
    params = parameters_in_blob_order(model)
    names = ["weight grad" if p.dim() > 1 else "bias grad" for p in params]
    return {
        f"{name} {i}": rel_err(g, p.grad)
        for i, (name, p, g) in enumerate(zip(names, params, grads, strict=True))
    }


def rel_err(got: np.ndarray | torch.Tensor, want: np.ndarray | torch.Tensor | None) -> float:
    """Normwise relative error max|got - want| / max|want| (0 if both are all zero)."""
    assert want is not None, "no reference (a gradient PyTorch did not compute)"
    g = np.asarray(got.detach() if isinstance(got, torch.Tensor) else got, dtype=np.float64)
    w = np.asarray(want.detach() if isinstance(want, torch.Tensor) else want, dtype=np.float64)
    g, w = g.reshape(-1), w.reshape(-1)
    assert g.shape == w.shape, (g.shape, w.shape)
    diff = float(np.max(np.abs(g - w), initial=0.0))
    scale = float(np.max(np.abs(w), initial=0.0))
    return diff / scale if scale > 0 else diff


def random_input(rng: np.random.Generator, shape: Sequence[int], ties: bool) -> np.ndarray:
    """Gaussian samples, or small integers so that pool windows and ReLU see exact ties and 0s."""
    if ties:
        return rng.integers(-2, 3, size=tuple(shape)).astype(np.float32)
    return rng.standard_normal(tuple(shape)).astype(np.float32)


def helper_test_layer(
    input_shape: Sequence[int],
    layer: dict[str, Any],
    *,
    n: int = 4,
    seed: int = 0,
    ties: bool = False,
    scale: float = 1.0,
    micro_batch: int | None = None,
    slots: int = 1,
) -> dict[str, float]:
    """One layer as a middle pipeline stage (stage 1 of 3, so it takes an upstream gradient and
    returns the input gradient): forward and every gradient against torch autograd."""
    ir = inline_ir(input_shape, [layer])
    model = torch_model(ir, seed)
    mb = micro_batch or n
    blob = stage_blob(ir, model, stage_index=1, stage_count=3, micro_batch=mb, slots=slots)
    rng = np.random.default_rng(seed)
    x = scale * random_input(rng, (n, *input_shape), ties)
    dout = rng.standard_normal((n, *ir.output_shape)).astype(np.float32)
    job = host_trainer.Job(
        x=x, y=np.zeros(n, np.int32), steps=[np.arange(n)], micro_batch=mb, upstream_grad=dout
    )
    got = host_trainer.grad(blob, job)

    xt = torch.tensor(x, requires_grad=True)
    out = model(xt)
    out.backward(torch.tensor(dout))
    assert got.grad_input is not None
    errors = {"forward": rel_err(got.outputs, out), "input grad": rel_err(got.grad_input, xt.grad)}
    errors.update(gradient_errors(model, got.grads))
    bad = {k: v for k, v in errors.items() if not v <= LAYER_RTOL}
    assert not bad, f"{layer} on {list(input_shape)}: errors above {LAYER_RTOL}: {bad}"
    return errors


def helper_test_loss(
    classes: int,
    last_layer: dict[str, Any],
    loss: str,
    *,
    n: int = 6,
    seed: int = 0,
    scale: float = 1.0,
    micro_batch: int | None = None,
) -> dict[str, float]:
    """A last stage of one layer (stage 1 of 2): loss value, arg-max count and the gradient sent
    upstream against torch's loss of DESIGN.md."""
    ir = inline_ir([classes], [last_layer])
    model = torch_model(ir, seed)
    mb = micro_batch or n
    blob = stage_blob(ir, model, stage_index=1, stage_count=2, micro_batch=mb)
    rng = np.random.default_rng(seed)
    x = (scale * rng.standard_normal((n, classes))).astype(np.float32)
    y = rng.integers(0, ir.output_shape[0], size=n).astype(np.int32)
    job = host_trainer.Job(x=x, y=y, steps=[np.arange(n)], loss=loss, micro_batch=mb)
    got = host_trainer.grad(blob, job)

    xt = torch.tensor(x, requires_grad=True)
    yt = torch.tensor(y, dtype=torch.int64)
    ref = reference_loss(model, xt, yt, loss)
    ref.backward()
    assert got.grad_input is not None
    correct = int((model(xt).argmax(dim=1) == yt).sum())
    errors = {
        "loss": abs(got.loss_sum / n - ref.item()) / abs(ref.item()),
        "input grad": rel_err(got.grad_input, xt.grad),
    }
    errors.update(gradient_errors(model, got.grads))
    assert got.correct == correct
    bad = {k: v for k, v in errors.items() if not v <= LAYER_RTOL}
    assert not bad, f"{last_layer} + {loss}: errors above {LAYER_RTOL}: {bad}"
    return errors


@dataclass(frozen=True)
class TrainSetup:
    """A whole-model training run, identical in both engines."""

    input_shape: tuple[int, ...]
    spec: Spec
    x: np.ndarray
    y: np.ndarray
    batch_size: int
    steps: int
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-3
    loss: str = "cross_entropy"
    micro_batch: int | None = None  # None: the whole batch
    slots: int = 1
    seed: int = 0

    def batches(self) -> list[np.ndarray]:
        """Seeded shuffles of the data, epoch after epoch, last partial batch of each kept."""
        rng = np.random.default_rng(self.seed)
        out: list[np.ndarray] = []
        while len(out) < self.steps:
            order = rng.permutation(len(self.x))
            out += [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return out[: self.steps]


@dataclass(frozen=True)
class TrainComparison:
    """Engine vs PyTorch float32 (the parity claim) and both vs PyTorch float64 (the arbiter when
    the run itself is ill-conditioned). Loss errors are normwise over the steps' losses."""

    weight_errors: list[float]  # engine vs torch float32, per tensor
    loss_error: float
    torch64_error: float  # torch float32 vs float64, weights and losses
    engine64_error: float  # engine vs float64, weights and losses
    near_tie_step: int | None  # first step with a ReLU/max-pool decision within rounding
    engine_losses: np.ndarray
    torch_losses: np.ndarray
    seconds: float

    @property
    def max_error(self) -> float:
        return max([*self.weight_errors, self.loss_error])

    def verdict(self) -> tuple[bool, str]:
        """Parity holds if the engine is within TRAIN_RTOL of PyTorch float32. If not, the run
        must be shown to be one where float32 rounding legitimately changes the result:

        * amplified: PyTorch float32 itself is farther than TRAIN_RTOL/10 from float64 (the
          dynamics amplify rounding); the engine must then be as close to float64 as PyTorch
          float32 is, within a factor 4 (two float32 runs drift from the exact one like two
          independent random walks);
        * near tie: at step k a ReLU input or a max-pool window's runner-up is within 1e-5
          (relative) of the decision boundary in the float64 run, so either float32 run may take
          the other branch from there; the losses of steps 0..k must still match.
        """
        if self.max_error <= TRAIN_RTOL:
            return True, f"parity {self.max_error:.1e}"
        if self.torch64_error > TRAIN_RTOL / 10 and self.engine64_error <= 4 * max(
            self.torch64_error, TRAIN_RTOL
        ):
            return True, (
                f"amplified: engine-float64 {self.engine64_error:.1e},"
                f" torch32-float64 {self.torch64_error:.1e}"
            )
        if self.near_tie_step is not None:
            k = self.near_tie_step + 1
            before = rel_err(self.engine_losses[:k], self.torch_losses[:k])
            if before <= TRAIN_RTOL:
                return True, f"near tie at step {self.near_tie_step}, losses before {before:.1e}"
        return False, (
            f"engine-torch32 {self.max_error:.1e} (losses {self.loss_error:.1e}),"
            f" engine-float64 {self.engine64_error:.1e},"
            f" torch32-float64 {self.torch64_error:.1e}, near tie step {self.near_tie_step}"
        )


NEAR_TIE = 1e-5


def decision_margin(module: nn.Module, x: torch.Tensor) -> float:
    """Relative distance of the closest discrete decision from its boundary: a ReLU input from 0,
    or a max-pool window's maximum from its runner-up. Exact ties (zeros after a ReLU, outputs that
    only saw padding) come from identical computations, are decided alike in any precision
    (first maximum wins) and are skipped."""
    x = x.detach()
    scale = float(x.abs().max())
    if scale == 0 or not np.isfinite(scale):
        return float("inf")
    if isinstance(module, nn.ReLU):
        nonzero = x.abs()[x != 0]
        return float(nonzero.min()) / scale if nonzero.numel() else float("inf")
    assert isinstance(module, nn.MaxPool2d)
    kh, kw = (
        module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
    )
    if kh * kw == 1:
        return float("inf")
    ph, pw = module.padding if isinstance(module.padding, tuple) else (module.padding,) * 2
    stride = module.stride
    padded = F.pad(x, (pw, pw, ph, ph), value=float("-inf"))
    cols = F.unfold(padded, (kh, kw), stride=stride)
    cols = cols.view(x.shape[0], x.shape[1], kh * kw, -1)
    top = cols.topk(2, dim=2).values
    gap = top[:, :, 0] - top[:, :, 1]
    relevant = torch.isfinite(gap) & (gap > 0)
    return float(gap[relevant].min()) / scale if bool(relevant.any()) else float("inf")


def torch_train(
    model: nn.Sequential,
    setup: TrainSetup,
    batches: list[np.ndarray],
    dtype: torch.dtype,
    margins: list[float] | None = None,
) -> tuple[list[torch.Tensor], np.ndarray]:
    """PyTorch's loop; with ``margins``, appends each step's smallest decision margin."""
    model = model.to(dtype)
    opt = torch.optim.SGD(
        model.parameters(), lr=setup.lr, momentum=setup.momentum, weight_decay=setup.weight_decay
    )
    x = torch.tensor(setup.x, dtype=dtype)
    y = torch.tensor(setup.y, dtype=torch.int64)
    step_margin = [float("inf")]
    if margins is not None:
        for module in model:
            if isinstance(module, (nn.ReLU, nn.MaxPool2d)):
                module.register_forward_hook(
                    lambda mod, inp, out: step_margin.append(decision_margin(mod, inp[0]))
                )
    losses = []
    for idx in batches:
        index = torch.from_numpy(idx.astype(np.int64))
        step_margin[:] = [float("inf")]
        opt.zero_grad()
        loss = reference_loss(model, x[index], y[index], setup.loss)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if margins is not None:
            margins.append(min(step_margin))
    return [p.detach() for p in parameters_in_blob_order(model)], np.array(losses)


def compare_training(setup: TrainSetup) -> TrainComparison:
    """Train the same model from the same weights on the same batches in nmcm-train and in
    PyTorch (float32 and float64); relative errors of every weight tensor and of the losses."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # these models are tiny: threads only contend with nmcm-train
    try:
        return _compare_training(setup)
    finally:
        torch.set_num_threads(threads)


def _compare_training(setup: TrainSetup) -> TrainComparison:
    ir = inline_ir(setup.input_shape, setup.spec)
    model = torch_model(ir, setup.seed)
    batches = setup.batches()
    mb = setup.micro_batch or setup.batch_size
    blob = stage_blob(ir, model, micro_batch=mb, slots=setup.slots, momentum=setup.momentum != 0)
    job = host_trainer.Job(
        x=setup.x,
        y=setup.y,
        steps=batches,
        lr=setup.lr,
        momentum=setup.momentum,
        weight_decay=setup.weight_decay,
        loss=setup.loss,
    )
    got = host_trainer.train(blob, job)
    want, want_losses = torch_train(model, setup, batches, torch.float32)
    margins: list[float] = []
    exact, exact_losses = torch_train(
        torch_model(ir, setup.seed), setup, batches, torch.float64, margins
    )
    near = [k for k, m in enumerate(margins) if m < NEAR_TIE]

    def worst(a: Sequence[Any], la: np.ndarray, b: Sequence[Any], lb: np.ndarray) -> float:
        errors = [rel_err(u, v) for u, v in zip(a, b, strict=True)]
        return max([*errors, rel_err(la, lb)])

    return TrainComparison(
        weight_errors=[rel_err(g, w) for g, w in zip(got.weights, want, strict=True)],
        loss_error=rel_err(got.losses, want_losses),
        torch64_error=worst(want, want_losses, exact, exact_losses),
        engine64_error=worst(got.weights, got.losses, exact, exact_losses),
        near_tie_step=near[0] if near else None,
        engine_losses=got.losses,
        torch_losses=want_losses,
        seconds=got.seconds,
    )


def digits() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's 8x8 digits (shipped in the wheel), scaled to [0, 1]."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.data / 16.0).astype(np.float32), data.target.astype(np.int32)


def _pair_or_int(rng: np.random.Generator, low: int, high: int) -> int | list[int]:
    """An int in [low, high], or sometimes a distinct (h, w) pair of them."""
    if rng.random() < 0.25:
        return [int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))]
    return int(rng.integers(low, high + 1))


def _random_spec(rng: np.random.Generator) -> tuple[tuple[int, ...], Spec]:
    spec: Spec = []
    if rng.random() < 0.7:
        shape: tuple[int, ...] = (
            int(rng.integers(1, 4)),
            int(rng.integers(4, 13)),
            int(rng.integers(4, 13)),
        )
        if rng.random() < 0.1:
            spec.append({"type": "relu"})  # a parameter-free first layer
        for _ in range(int(rng.integers(0 if rng.random() < 0.15 else 1, 4))):
            k = _pair_or_int(rng, 1, 4)
            spec.append(
                {
                    "type": "conv2d",
                    "out_channels": int(rng.integers(1, 7)),
                    "kernel_size": k,
                    "stride": _pair_or_int(rng, 1, 2),
                    "padding": _pair_or_int(rng, 0, 2),
                    "bias": bool(rng.random() < 0.8),
                }
            )
            if rng.random() < 0.7:
                spec.append({"type": "relu"})
            if rng.random() < 0.5:
                pk = int(rng.integers(1, 4))
                spec.append(
                    {
                        "type": "maxpool2d",
                        "kernel_size": pk,
                        "stride": int(rng.integers(1, pk + 1)),
                        "padding": int(rng.integers(0, pk // 2 + 1)),
                    }
                )
        spec.append({"type": "flatten"})
    else:
        shape = (int(rng.integers(3, 21)),)
        if rng.random() < 0.15:
            spec.append({"type": "flatten"})  # a no-op that aliases the stage input
    for _ in range(int(rng.integers(0, 3))):
        spec.append({"type": "linear", "out_features": int(rng.integers(3, 25))})
        if rng.random() < 0.7:
            spec.append({"type": "relu"})
    classes = int(rng.integers(2, 11))
    spec.append({"type": "linear", "out_features": classes, "bias": bool(rng.random() < 0.8)})
    if rng.random() < 0.5:
        spec.append({"type": "softmax"})
    return shape, spec


def random_setup(seed: int, steps: int = 100) -> TrainSetup:
    """One member of the seeded family of random architectures of the six layers, with random
    data, batch size, micro-batching, loss and SGD settings."""
    from nmcm_deploy.errors import ModelError

    rng = np.random.default_rng(seed)
    while True:
        shape, spec = _random_spec(rng)
        try:
            ir = inline_ir(shape, spec)
        except ModelError:
            continue  # e.g. a kernel larger than what is left of the image: draw again
        break
    n = int(rng.integers(24, 65))
    batch = int(rng.integers(1, 17))
    micro = int(rng.integers(1, batch + 1)) if rng.random() < 0.5 else None
    return TrainSetup(
        input_shape=shape,
        spec=spec,
        x=rng.standard_normal((n, *shape)).astype(np.float32),
        y=rng.integers(0, ir.output_shape[0], size=n).astype(np.int32),
        batch_size=batch,
        steps=steps,
        lr=float(rng.choice([0.01, 0.02, 0.05])),
        momentum=float(rng.choice([0.0, 0.5, 0.9, 0.9])),
        weight_decay=float(rng.choice([0.0, 1e-3, 1e-2])),
        loss=str(rng.choice(["cross_entropy", "mse"])),
        micro_batch=micro,
        slots=int(rng.integers(1, 4)),
        seed=seed,
    )


def describe(setup: TrainSetup) -> str:
    """A one-line summary of a setup, for test ids and reports."""
    ir = inline_ir(setup.input_shape, setup.spec)
    layers = " ".join(layer.describe().replace(" ", "") for layer in ir.layers)
    return (
        f"{list(setup.input_shape)} {layers} | {setup.loss} B{setup.batch_size}"
        f" mb{setup.micro_batch or setup.batch_size} slots{setup.slots} lr{setup.lr}"
        f" m{setup.momentum} wd{setup.weight_decay}"
    )
