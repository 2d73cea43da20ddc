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

import functools
from collections import defaultdict
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


def _clip(v: int, top: int) -> int:
    return max(0, min(v, top))


def _blocks(size: int, block: int) -> list[tuple[int, int]]:
    """(block size, how many) of a dimension walked in full blocks, then single ones (the tiled
    kernels' ``tiles`` and channel blocks)."""
    return [(block, size // block), (1, size % block)]


@dataclass(frozen=True)
class _Corr:
    """An output-stationary correlation (conv2d.cpp ``Correlation``): the forward pass, or the
    input gradient at stride 1."""

    channels: int
    h: int
    w: int
    outs: int
    oh: int
    ow: int
    kh: int
    kw: int
    sy: int
    sx: int
    py: int
    px: int


@functools.cache
def _correlation(k: _Corr) -> Features:
    """Loop counts of one sample's correlation (conv2d.cpp ``correlate``): tiles of Q output
    channels x P pixels, each over its channels and valid kernel rows; the loads, multiply-adds
    (zero columns included where the 3-wide kernel reads them) and stores they make."""
    c: Features = defaultdict(float)
    for q, blocks in _blocks(k.outs, 4):
        if not blocks:
            continue
        one: Features = defaultdict(float)

        def tile(one: Features, q: int, p: int, nky: int, nkx: int, window: bool) -> None:
            one["window_tile" if window else "single_tile"] += 1
            one["tile_channel"] += k.channels
            one["tile_row"] += k.channels * nky
            one["store"] += q * p
            if window:  # the 3-wide kernel: P + 2 columns read once, the taps from registers
                one["window_load"] += k.channels * nky * (p + 2)
                one["load"] += k.channels * nky * q * 3
                one["fma"] += k.channels * nky * q * p * 3
            else:
                one["tile_tap"] += k.channels * nky * nkx
                one["load"] += k.channels * nky * nkx * (p + q)
                one["fma"] += k.channels * nky * nkx * q * p

        def pixel(one: Features, q: int, x: int, nky: int) -> None:
            """correlation_pixel: one pixel, its taps clipped to the input."""
            x0 = x * k.sx - k.px
            kx0, kx1 = max(0, -x0), _clip(k.w - x0, k.kw)
            if kx0 >= kx1:
                one["empty_pixel"] += 1
                one["store"] += q
            else:
                tile(one, q, 1, nky, kx1 - kx0, False)

        for y in range(k.oh):
            y0 = y * k.sy - k.py
            ky0, ky1 = max(0, -y0), _clip(k.h - y0, k.kh)
            one["out_row"] += 1
            if ky0 >= ky1:
                one["store"] += q * k.ow
                continue
            nky = ky1 - ky0
            x = 0
            if k.kw == 3 and k.sx == 1:  # tiles of 4 pixels, then single ones
                while x + 4 <= k.ow:
                    tile(one, q, 4, nky, 3, True)
                    x += 4
            for rest in range(x, k.ow):
                pixel(one, q, rest, nky)
        for name, v in one.items():
            c[name] += v * blocks
    return dict(c)


@functools.cache
def _weight_grad(layer: Layer) -> tuple[Features, Features]:
    """Loop counts of conv2d's weight gradient (conv2d.cpp ``weight_grad_channels``): per tile of
    Q output channels x T taps of one kernel row (the call's part) and per sample (the part that
    repeats for every sample)."""
    c, h, w = layer.in_shape
    oc, oh, ow = layer.out_shape
    kh, kw = layer.kernel
    sh, sw = layer.stride
    ph, pw = layer.padding
    per_call: Features = defaultdict(float)
    per_sample: Features = defaultdict(float)
    window3 = kw == 3 and sh == 1 and sw == 1
    for q, blocks in _blocks(oc, 4):
        if not blocks:
            continue
        for ky in range(kh):
            r_lo, r_hi = valid_span(oh, h, sh, ky - ph)
            rows = (r_hi - r_lo) * c * blocks
            if window3:
                per_call["wg3_tile"] += c * blocks
                per_sample["wg3_tile"] += c * blocks
                per_sample["wg3_flush"] += c * blocks * q * 3
                per_sample["wg3_row"] += rows
                per_sample["wg3_row_channel"] += rows * q  # a pointer per output channel
                x = 0
                while x < ow:  # groups of 4 where their window is inside, single pixels else
                    p = 4 if x >= pw and x + 4 <= ow and x - pw + 6 <= w else 1
                    per_sample["wg3_group"] += rows
                    per_sample["wg3_single_group"] += rows if p == 1 else 0
                    per_sample["wg3_load"] += rows * (p + 2 + q * p)
                    per_sample["wg3_cond_load"] += rows * 3 if p == 1 else 0
                    per_sample["wg3_fma"] += rows * q * p * 3
                    x += p
                continue
            # Other kernels: one tap per tile.
            for kx0 in range(kw):
                s0, s1 = valid_span(ow, w, sw, kx0 - pw)
                per_call["wg_tile"] += c * blocks
                per_sample["wg_tile"] += c * blocks
                per_sample["wg_flush"] += c * blocks * q
                per_sample["wg_row"] += rows
                per_sample["wg_row_channel"] += rows * q
                per_sample["wg_load"] += rows * (s1 - s0) * (1 + q)
                per_sample["wg_fma"] += rows * q * (s1 - s0)
    return dict(per_call), dict(per_sample)


def _valid_taps(layer: Layer) -> tuple[int, int]:
    """Per (output channel, input channel) pair and sample, summed over the kernel taps: each
    tap's output rows whose input row is inside, and its products whose input is inside."""
    _, h, w = layer.in_shape
    _, oh, ow = layer.out_shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    rows = macs = 0
    for ky in range(kh):
        r_lo, r_hi = valid_span(oh, h, sh, ky - ph)
        for kx in range(kw):
            c_lo, c_hi = valid_span(ow, w, sw, kx - pw)
            rows += r_hi - r_lo
            macs += (r_hi - r_lo) * (c_hi - c_lo)
    return rows, macs


def _strided_input_grad(layer: Layer) -> Features:
    """Per sample, conv2d's input gradient at a stride above 1 (conv2d.cpp
    ``input_grad_strided``): tap by tap, its valid rows and their products."""
    rows, macs = _valid_taps(layer)
    pairs = layer.in_shape[0] * layer.out_shape[0]
    kh, kw = layer.kernel
    return {"sdin_tap": pairs * kh * kw, "sdin_row": pairs * rows, "sdin_mac": pairs * macs}


def _conv_corr(layer: Layer) -> _Corr:
    (c, h, w), (oc, oh, ow) = layer.in_shape, layer.out_shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    return _Corr(c, h, w, oc, oh, ow, kh, kw, sh, sw, ph, pw)


def _conv_input_corr(layer: Layer) -> _Corr:
    """The input gradient at stride 1: the output gradient correlated with the flipped kernel."""
    (c, h, w), (oc, oh, ow) = layer.in_shape, layer.out_shape
    (kh, kw), (ph, pw) = layer.kernel, layer.padding
    return _Corr(oc, oh, ow, c, h, w, kh, kw, 1, 1, kh - 1 - ph, kw - 1 - pw)


_CORRELATION = (
    "out_row", "window_tile", "single_tile", "empty_pixel", "tile_channel",
    "tile_row", "tile_tap", "window_load", "load", "fma", "store",
)  # fmt: skip
CONV_FORWARD = ("call", "sample", *_CORRELATION)
CONV_BACKWARD = (
    "call", "sample", "bias_plane", "bias_element",
    "wg_tile", "wg_tile_sample", "wg_flush", "wg_row", "wg_row_channel", "wg_load", "wg_fma",
    "wg3_tile", "wg3_tile_sample", "wg3_flush", "wg3_row", "wg3_row_channel", "wg3_group",
    "wg3_single_group",
    "wg3_load", "wg3_cond_load", "wg3_fma",
    *(f"din_{name}" for name in _CORRELATION),
    "sdin_fill", "sdin_tap", "sdin_row", "sdin_mac",
)  # fmt: skip


def _conv_features(layer: Layer, n: int, forward: bool, din: bool) -> Features:
    out = dict.fromkeys(CONV_FORWARD if forward else CONV_BACKWARD, 0.0)
    out["call"], out["sample"] = 1, n
    if forward:
        for name, v in _correlation(_conv_corr(layer)).items():
            if name in out:
                out[name] += n * v
        return out
    oc = layer.out_shape[0]
    if layer.bias:  # one sum per sample and output channel
        out["bias_plane"] = n * oc
        out["bias_element"] = n * oc * numel(layer.out_shape[1:])
    per_call, per_sample = _weight_grad(layer)
    for name, v in per_call.items():  # the tiles, once per call
        out[name] += v
    for name, v in per_sample.items():  # a tile's per-sample part, and the rest, per sample
        out[f"{name}_sample" if name.endswith("_tile") else name] += n * v
    if not din:
        return out
    if layer.stride == (1, 1):
        for name, v in _correlation(_conv_input_corr(layer)).items():
            key = f"din_{name}"
            if key in out:
                out[key] += n * v
    else:
        out["sdin_fill"] = n * numel(layer.in_shape)
        for name, v in _strided_input_grad(layer).items():
            out[name] += n * v
    return out


def _tiles(rows: int, cols: int) -> tuple[int, int]:
    """Tiles of the linear kernels' 4 x 4 grid over rows x cols, and the loads one reduction
    step of all of them makes (R + C per tile)."""
    row_blocks = rows // 4 + rows % 4
    col_blocks = cols // 4 + cols % 4
    return row_blocks * col_blocks, col_blocks * rows + row_blocks * cols


def _linear_features(layer: Layer, n: int, forward: bool, din: bool) -> Features:
    i, o = layer.in_shape[0], layer.out_shape[0]
    if forward:
        # y = x Wᵀ + b in tiles over (samples, outputs), the inputs summed in blocks of 16.
        tiles, loads = _tiles(n, o)
        return {
            "call": 1,
            "tile": tiles,
            "tile_step": tiles * i,
            "load": loads * i,
            "mac": n * o * i,
            "block_output": n * o * -(-i // 16),
            "output": n * o,
        }
    # db over samples; dw in tiles over (outputs, inputs) summed over the samples; dx in tiles
    # over (samples, inputs) summed over the outputs.
    w_tiles, w_loads = _tiles(o, i)
    x_tiles, x_loads = _tiles(n, i) if din else (0, 0)
    return {
        "call": 1,
        "bias_sample": n * o if layer.bias else 0,
        "weight": o * i,
        "wg_tile": w_tiles,
        "wg_tile_step": w_tiles * n,
        "wg_load": w_loads * n,
        "wg_mac": n * o * i,
        "din_tile": x_tiles,
        "din_tile_step": x_tiles * o,
        "din_load": x_loads * o,
        "din_mac": n * o * i if din else 0,
        "din_output": n * i if din else 0,
    }


def _is_2x2_tiling(layer: Layer) -> bool:
    """maxpool2d.cpp ``is_2x2_tiling``: the comparison-chain path."""
    return layer.kernel == (2, 2) and layer.stride == (2, 2) and layer.padding == (0, 0)


def _pool_features(layer: Layer, n: int, forward: bool, din: bool) -> Features:
    planes = n * layer.in_shape[0]
    outputs = planes * numel(layer.out_shape[1:])
    out = dict.fromkeys(
        ("call", "plane", "output", "chain_window", "window", "window_row", "out_row", "input"), 0.0
    )
    out["call"] = 1
    if not forward and not din:
        return out  # nothing to compute: the input gradient is the only output
    out["plane"], out["output"] = planes, outputs
    if _is_2x2_tiling(layer):
        # The comparison chain, on planes of finite values (a plane with a NaN or an infinity
        # takes the general path once more: data the model does not see).
        out["chain_window"] = outputs
        if not forward:  # the odd row and column no window covers are zeroed
            _, h, w = layer.in_shape
            _, oh, ow = layer.out_shape
            out["input"] = planes * ((h - 2 * oh) * w + (w - 2 * ow) * 2 * oh)
        return out
    out["window"] = planes * _pool_elements(layer)
    out["window_row"] = planes * _pool_rows(layer)
    out["out_row"] = planes * layer.out_shape[1]
    if not forward:  # dx zeroed, then one arg-max pass per window
        out["input"] = n * numel(layer.in_shape)
    return out


def _pool_rows(layer: Layer) -> int:
    """Window rows the pooling windows of one plane walk, summed over its outputs."""
    _, h, _ = layer.in_shape
    _, oh, ow = layer.out_shape
    return ow * sum(
        _window(oy, layer.stride[0], layer.padding[0], layer.kernel[0], h) for oy in range(oh)
    )


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
    din = not forward and call.input_grad
    kind = layer.kind
    if kind is LayerKind.LINEAR:
        return _linear_features(layer, n, forward, din)
    if kind is LayerKind.CONV2D:
        return _conv_features(layer, n, forward, din)
    if kind is LayerKind.MAXPOOL2D:
        return _pool_features(layer, n, forward, din)
    if kind is LayerKind.RELU:
        return {"call": 1, "element": n * numel(layer.in_shape) * (1 if forward or din else 0)}
    if kind is LayerKind.SOFTMAX:
        f = layer.in_shape[0]
        return {"call": 1, "sample": n, "element": n * f}
    if kind is LayerKind.FLATTEN:
        return {"call": 1}  # the memory plan aliases a flatten's output to its input: no copy
    raise ValueError(f"no features for layer kind {kind.label}")


def useful_macs(call: Call) -> int:
    """The multiply-accumulates a call needs, padding skipped: the forward's (for conv2d, the
    taps inside the input), the backward's weight gradient and, if wanted, input gradient."""
    layer, n = call.layer, call.samples
    if layer.kind is LayerKind.LINEAR:
        per = layer.in_shape[0] * layer.out_shape[0]
    elif layer.kind is LayerKind.CONV2D:
        per = layer.in_shape[0] * layer.out_shape[0] * _valid_taps(layer)[1]
    else:
        return 0
    if call.direction is Direction.FORWARD:
        return n * per
    return n * per * (2 if call.input_grad else 1)


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
