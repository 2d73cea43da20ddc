"""What a layer's kernels do, counted: the features the cost model weighs.

For each layer kind and direction, the loop counts of the firmware's own kernels
(firmware/core/src/layers/) for one call on ``n`` samples: multiply-accumulates, inner-loop
calls, elements written, samples, and the call itself. The instructions of a call are modelled
as a weighted sum of these (model.py); the weights are fitted to instruction counts measured
under QEMU (``nmcm calibrate``). Pure: no torch, no numpy.

The counts follow the kernels' loop structure exactly, including what padding skips: a conv2d
tap whose window falls outside the input runs no inner loop (``valid_span`` in
firmware/core/src/layers/window.h), and a layer whose input gradient nobody needs (the first
layers of the first stage) skips that half of its backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from nmcm_deploy.compiler.ir import Layer, LayerKind, numel

Features = dict[str, float]


class Direction(str, Enum):
    FORWARD = "forward"
    BACKWARD = "backward"


@dataclass(frozen=True)
class Call:
    """One kernel call: a layer, a direction, the micro-batch's samples, and whether the backward
    computes the gradient of the layer's input (every layer but the first ones of stage 0)."""

    layer: Layer
    direction: Direction
    samples: int
    input_grad: bool = True


def valid_span(out_len: int, size: int, stride: int, offset: int) -> tuple[int, int]:
    """Output positions ``o`` whose input position ``o * stride + offset`` is inside
    ``[0, size)``, as [lo, hi): the firmware's ``valid_span`` (window.h)."""
    lo = 0 if offset >= 0 else (-offset + stride - 1) // stride
    top = size - 1 - offset
    hi = 0 if top < 0 else min(top // stride + 1, out_len)
    return (0, 0) if lo >= hi else (lo, hi)


def _window(o: int, stride: int, pad: int, kernel: int, size: int) -> int:
    """Input positions a pooling window at output ``o`` covers (maxpool2d.cpp ``window``)."""
    start = o * stride - pad
    return max(0, min(start + kernel, size) - max(start, 0))


def _conv_loops(layer: Layer) -> tuple[int, int, int]:
    """Per sample, per (output channel, input channel) pair: the taps with a non-empty column
    span, the inner-loop calls (one per valid row of such a tap) and the multiply-accumulates."""
    _, h, w = layer.in_shape
    _, oh, ow = layer.out_shape
    kh, kw = layer.kernel
    sh, sw = layer.stride
    ph, pw = layer.padding
    taps = rows = macs = 0
    for ky in range(kh):
        r_lo, r_hi = valid_span(oh, h, sh, ky - ph)
        for kx in range(kw):
            c_lo, c_hi = valid_span(ow, w, sw, kx - pw)
            if c_hi == c_lo:
                continue
            taps += 1
            rows += r_hi - r_lo
            macs += (r_hi - r_lo) * (c_hi - c_lo)
    return taps, rows, macs


def _pool_elements(layer: Layer) -> int:
    """Input elements the pooling windows of one plane read, summed over its outputs."""
    _, h, w = layer.in_shape
    _, oh, ow = layer.out_shape
    kh, kw = layer.kernel
    sh, sw = layer.stride
    ph, pw = layer.padding
    rows = sum(_window(oy, sh, ph, kh, h) for oy in range(oh))
    cols = sum(_window(ox, sw, pw, kw, w) for ox in range(ow))
    return rows * cols


def features(call: Call) -> Features:
    """The loop counts of one kernel call (docstring of this module)."""
    layer, n = call.layer, call.samples
    forward = call.direction is Direction.FORWARD
    din = 0.0 if forward or not call.input_grad else 1.0
    kind = layer.kind
    if kind is LayerKind.LINEAR:
        i, o = layer.in_shape[0], layer.out_shape[0]
        if forward:
            return {"call": 1, "sample": n, "output": n * o, "mac": n * o * i}
        # db (per output), dw += g * x (one axpy per output), then dx = 0, dx += w * g.
        return {
            "call": 1,
            "sample": n,
            "output": n * o * (1 + din),
            "input": n * i * din,
            "mac": n * o * i * (1 + din),
        }
    if kind is LayerKind.CONV2D:
        c, oc = layer.in_shape[0], layer.out_shape[0]
        taps, rows, macs = _conv_loops(layer)
        pairs = n * oc * c
        out_plane = numel(layer.out_shape[1:])
        # A row of a tap runs vec::axpy / vec::dot at column stride 1, a plain strided loop else.
        row, mac = ("row", "mac") if layer.stride[1] == 1 else ("strided_row", "strided_mac")
        kh, kw = layer.kernel
        loops = {
            "call": 1,
            "channel": n * oc,  # the output plane's fill (forward) or the bias sum (backward)
            "output": n * oc * out_plane,
            "pair": pairs,  # per (output channel, input channel): pointers, the kernel loops
            "kernel_row": pairs * kh,  # the rows' valid span, once per kernel row
            "tap": pairs * kh * kw,  # the columns' valid span, once per tap
            "valid_tap": pairs * taps,  # a tap whose columns are not all outside
        }
        if forward:
            return {**loops, row: pairs * rows, mac: pairs * macs}
        backward = {**loops, "input": n * numel(layer.in_shape) * din}
        if layer.stride[1] == 1:
            # Per row a vec::dot for dw, and a vec::axpy for dx when dx is wanted.
            return {
                **backward,
                "row": pairs * rows,
                "mac": pairs * macs,
                "din_row": pairs * rows * din,
                "din_mac": pairs * macs * din,
            }
        # One strided loop per row doing both, testing for dx at every element.
        return {
            **backward,
            "strided_row": pairs * rows,
            "strided_mac": pairs * macs,
            "strided_din_mac": pairs * macs * din,
        }
    if kind is LayerKind.MAXPOOL2D:
        planes = n * layer.in_shape[0]
        outputs = planes * numel(layer.out_shape[1:])
        read = planes * _pool_elements(layer)
        if forward:
            return {"call": 1, "plane": planes, "output": outputs, "window": read}
        # Backward: zero dx, then per output the max again and the arg-max (two passes).
        return {
            "call": 1,
            "plane": planes * din,
            "output": outputs * din,
            "input": n * numel(layer.in_shape) * din,
            "window": 2 * read * din,
        }
    if kind is LayerKind.RELU:
        return {"call": 1, "element": n * numel(layer.in_shape) * (1 if forward else din)}
    if kind is LayerKind.SOFTMAX:
        f = layer.in_shape[0]
        return {"call": 1, "sample": n, "element": n * f}
    if kind is LayerKind.FLATTEN:
        return {"call": 1}  # the memory plan aliases a flatten's output to its input: no copy
    raise ValueError(f"no features for layer kind {kind.label}")


# The three loss kernels (firmware/core/include/nmcm/loss.h), by what they are given.
LOSS_KERNELS = ("probabilities", "logits", "mse")


def loss_kernel(loss: str, ends_in_softmax: bool) -> str:
    """The loss kernel the last stage runs: cross-entropy on a final softmax's probabilities
    (fused: the softmax has no backward), cross-entropy on logits, or MSE."""
    if loss == "mse":
        return "mse"
    return "probabilities" if ends_in_softmax else "logits"


def loss_features(samples: int, classes: int, kernel: str) -> Features:
    """The loss and its gradient seed on the last stage (firmware/core/src/loss.cpp) for one
    micro-batch, each kernel its own features (a log-softmax costs more than a lookup)."""
    if kernel not in LOSS_KERNELS:
        raise ValueError(f"unknown loss kernel {kernel!r}")
    return {"call": 1, f"{kernel}_sample": samples, f"{kernel}_element": samples * classes}


def step_features(parameters: int, tensors: int, momentum: bool, decay: bool) -> Features:
    """The optimizer step over a stage's parameter tensors (firmware/core/src/sgd.cpp): one loop
    per tensor, with or without a momentum buffer, adding the weight decay or not."""
    return {
        "call": 1,
        "tensor": tensors,
        "parameter": parameters,
        "momentum_parameter": parameters if momentum else 0,
        "decay_parameter": parameters if decay else 0,
    }
