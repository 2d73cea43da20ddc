"""The cost model's loop counts (nmcm_deploy/costs/features.py) against brute force: every output
position and kernel tap visited, the ones inside the input counted, and what the tiled kernels
must do whatever their tiles (write every output once, make every product inside the input).
Shapes are sampled with fixed seeds."""

from __future__ import annotations

import random

import pytest

from nmcm_deploy.compiler.ir import Layer, LayerKind
from nmcm_deploy.costs.features import Call, Direction, features, useful_macs, valid_span


def out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def random_window_layer(rng: random.Random, kind: LayerKind) -> Layer:
    c, oc = rng.randint(1, 4), rng.randint(1, 5)
    h, w = rng.randint(1, 12), rng.randint(1, 12)
    kh, kw = rng.randint(1, min(h, 5)), rng.randint(1, min(w, 5))
    sh, sw = rng.randint(1, 3), rng.randint(1, 3)
    if kind is LayerKind.MAXPOOL2D:
        ph, pw, oc = rng.randint(0, kh // 2), rng.randint(0, kw // 2), c
    else:
        ph, pw = rng.randint(0, kh), rng.randint(0, kw)
    oh, ow = out_size(h, kh, sh, ph), out_size(w, kw, sw, pw)
    return Layer(kind, (c, h, w), (oc, oh, ow), (kh, kw), (sh, sw), (ph, pw), bias=True)


def brute_conv(layer: Layer) -> int:
    """Multiply-accumulates inside the input per (output channel, input channel) pair and
    sample: every output position and kernel tap visited."""
    _, h, w = layer.in_shape
    _, oh, ow = layer.out_shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    return sum(
        1
        for oy in range(oh)
        for ox in range(ow)
        for ky in range(kh)
        for kx in range(kw)
        if 0 <= oy * sh + ky - ph < h and 0 <= ox * sw + kx - pw < w
    )


@pytest.mark.parametrize("seed", range(200))
def test_valid_span_is_the_positions_inside_the_input(seed: int) -> None:
    rng = random.Random(seed)
    out_len, size, stride = rng.randint(0, 20), rng.randint(1, 20), rng.randint(1, 4)
    offset = rng.randint(-6, 6)
    inside = [o for o in range(out_len) if 0 <= o * stride + offset < size]
    lo, hi = valid_span(out_len, size, stride, offset)
    assert list(range(lo, hi)) == inside


def window3(layer: Layer) -> bool:
    """The 3-wide kernel at column stride 1 has its own tiles (conv2d.cpp ``window3_row``)."""
    return layer.kernel[1] == 3 and layer.stride[1] == 1


@pytest.mark.parametrize("seed", range(100))
def test_conv2d_tiles_cover_every_output_once_and_every_product_inside(seed: int) -> None:
    rng = random.Random(seed)
    layer = random_window_layer(rng, LayerKind.CONV2D)
    n = rng.randint(1, 8)
    macs = brute_conv(layer)
    (c, h, w), (oc, oh, ow) = layer.in_shape, layer.out_shape
    (kh, kw), (sh, sw), (ph, _) = layer.kernel, layer.stride, layer.padding
    fwd = features(Call(layer, Direction.FORWARD, n))
    assert fwd["store"] == n * oc * oh * ow  # each output written once, by one tile or row
    assert useful_macs(Call(layer, Direction.FORWARD, n)) == n * c * oc * macs
    if window3(layer):
        # Tiles of 4 pixels take every column of a valid kernel row (those outside as zeros);
        # the pixels after the last tile take only the taps inside the input.
        tiled = ow // 4 * 4
        products = sum(
            3 if ox < tiled else sum(0 <= ox + kx - layer.padding[1] < w for kx in range(3))
            for ox in range(ow)
        )
        valid_rows = sum(0 <= oy * sh + ky - ph < h for oy in range(oh) for ky in range(kh))
        assert fwd["fma"] == n * c * oc * valid_rows * products
    else:  # only the taps inside the input
        assert fwd["fma"] == n * c * oc * macs
    with_din = features(Call(layer, Direction.BACKWARD, n, input_grad=True))
    without = features(Call(layer, Direction.BACKWARD, n, input_grad=False))

    def weight_grad(grad: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in grad.items() if k.startswith(("wg_", "wg3_"))}

    assert weight_grad(with_din) == weight_grad(without)  # dw: the same work with or without dx
    if kw == 3 and sh == sw == 1:  # each pixel of a valid row: all three taps (zeros outside)
        taps_rows = sum(sum(0 <= oy + ky - ph < h for oy in range(oh)) for ky in range(kh))
        assert with_din["wg3_fma"] == n * c * oc * taps_rows * 3 * ow
        assert with_din["wg_fma"] == 0
    else:  # one tap at a time, only the products inside the input
        assert with_din["wg_fma"] == n * c * oc * macs
        assert with_din["wg3_fma"] == 0
    assert all(v == 0 for k, v in without.items() if k.startswith(("din_", "sdin_")))
    if layer.stride == (1, 1):  # dx: the flipped kernel's correlation writes every input once
        assert with_din["din_store"] == n * c * h * w
        assert with_din["sdin_mac"] == 0
    else:  # dx: zeroed, then scattered tap by tap
        assert with_din["sdin_fill"] == n * c * h * w
        assert with_din["sdin_mac"] == n * c * oc * macs
        assert with_din["sdin_row"] == n * c * oc * sum(
            sum(0 <= oy * sh + ky - ph < h for oy in range(oh))
            for ky in range(kh)
            for _ in range(kw)
        )


@pytest.mark.parametrize("seed", range(100))
def test_maxpool2d_reads_each_window_inside_the_input(seed: int) -> None:
    rng = random.Random(seed)
    layer = random_window_layer(rng, LayerKind.MAXPOOL2D)
    if rng.random() < 0.3:  # the 2x2 window at stride 2, which has a path of its own
        c, h, w = layer.in_shape
        layer = (
            Layer(LayerKind.MAXPOOL2D, (c, h, w), (c, h // 2, w // 2), (2, 2), (2, 2), (0, 0))
            if h >= 2 and w >= 2
            else layer
        )
    n = rng.randint(1, 8)
    _, h, w = layer.in_shape
    _, oh, ow = layer.out_shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    read = sum(
        1
        for oy in range(oh)
        for ox in range(ow)
        for ky in range(kh)
        for kx in range(kw)
        if 0 <= oy * sh - ph + ky < h and 0 <= ox * sw - pw + kx < w
    )
    planes = n * layer.in_shape[0]
    fwd = features(Call(layer, Direction.FORWARD, n))
    bwd = features(Call(layer, Direction.BACKWARD, n))
    if layer.kernel == layer.stride == (2, 2) and layer.padding == (0, 0):
        assert fwd["chain_window"] == bwd["chain_window"] == planes * oh * ow
        assert fwd["window"] == bwd["window"] == 0
        # Only the odd row and column no window covers are zeroed.
        assert bwd["input"] == planes * (h * w - 4 * oh * ow)
    else:
        assert fwd["window"] == bwd["window"] == planes * read
        assert fwd["chain_window"] == 0
        assert bwd["input"] == planes * h * w  # dx zeroed first
    # Without an input gradient to compute, the backward is the call and nothing else.
    skipped = features(Call(layer, Direction.BACKWARD, n, input_grad=False))
    assert {name: v for name, v in skipped.items() if v} == {"call": 1}


def test_linear_counts_its_multiply_accumulates_and_tiles() -> None:
    layer = Layer(LayerKind.LINEAR, (64,), (10,), bias=True)
    fwd = features(Call(layer, Direction.FORWARD, 5))
    assert fwd["mac"] == 5 * 64 * 10
    # 5 samples x 10 outputs: sample blocks 4 + 1, output blocks 4 + 4 + 1 + 1.
    assert fwd["tile"] == 2 * 4
    assert fwd["load"] == 64 * (4 * 5 + 2 * 10)  # per input step: R + C per tile
    assert fwd["block_output"] == 5 * 10 * 4  # 64 inputs: four blocks of 16
    bwd = features(Call(layer, Direction.BACKWARD, 5))
    assert bwd["wg_mac"] == bwd["din_mac"] == 5 * 64 * 10
    skipped = features(Call(layer, Direction.BACKWARD, 5, input_grad=False))
    assert skipped["wg_mac"] == 5 * 64 * 10 and skipped["din_mac"] == skipped["din_tile"] == 0
    assert useful_macs(Call(layer, Direction.BACKWARD, 5)) == 2 * 5 * 64 * 10


def test_a_flatten_costs_one_call_whatever_its_size() -> None:
    small = Layer(LayerKind.FLATTEN, (1, 2, 2), (4,))
    large = Layer(LayerKind.FLATTEN, (8, 16, 16), (2048,))
    for direction in Direction:
        assert features(Call(small, direction, 1)) == features(Call(large, direction, 64))
