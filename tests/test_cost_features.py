"""The cost model's loop counts (nmcm_deploy/costs/features.py) against brute force: every output
position and kernel tap visited, the ones inside the input counted. Shapes are sampled with
fixed seeds."""

from __future__ import annotations

import random

import pytest

from nmcm_deploy.compiler.ir import Layer, LayerKind
from nmcm_deploy.costs.features import Call, Direction, features, valid_span


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


def brute_conv(layer: Layer) -> tuple[int, int, int]:
    """Taps with a valid column span, valid rows of those taps, and multiply-accumulates inside
    the input, per (output channel, input channel) pair and sample."""
    _, h, w = layer.in_shape
    _, oh, ow = layer.out_shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel, layer.stride, layer.padding
    taps = rows = macs = 0
    for ky in range(kh):
        valid_rows = [oy for oy in range(oh) if 0 <= oy * sh + ky - ph < h]
        for kx in range(kw):
            valid_cols = [ox for ox in range(ow) if 0 <= ox * sw + kx - pw < w]
            if not valid_cols:
                continue
            taps += 1
            rows += len(valid_rows)
            macs += len(valid_rows) * len(valid_cols)
    return taps, rows, macs


@pytest.mark.parametrize("seed", range(200))
def test_valid_span_is_the_positions_inside_the_input(seed: int) -> None:
    rng = random.Random(seed)
    out_len, size, stride = rng.randint(0, 20), rng.randint(1, 20), rng.randint(1, 4)
    offset = rng.randint(-6, 6)
    inside = [o for o in range(out_len) if 0 <= o * stride + offset < size]
    lo, hi = valid_span(out_len, size, stride, offset)
    assert list(range(lo, hi)) == inside


@pytest.mark.parametrize("seed", range(100))
def test_conv2d_counts_only_taps_inside_the_input(seed: int) -> None:
    rng = random.Random(seed)
    layer = random_window_layer(rng, LayerKind.CONV2D)
    n = rng.randint(1, 8)
    taps, rows, macs = brute_conv(layer)
    c, oc = layer.in_shape[0], layer.out_shape[0]
    pairs = n * c * oc
    kh, kw = layer.kernel
    row, mac = ("row", "mac") if layer.stride[1] == 1 else ("strided_row", "strided_mac")
    fwd = features(Call(layer, Direction.FORWARD, n))
    assert (fwd["valid_tap"], fwd[row], fwd[mac]) == (pairs * taps, pairs * rows, pairs * macs)
    assert (fwd["pair"], fwd["kernel_row"], fwd["tap"]) == (pairs, pairs * kh, pairs * kh * kw)
    if layer.padding == (0, 0):
        assert fwd[mac] == n * layer.macs()  # no padding: every tap of every output counts
    with_din = features(Call(layer, Direction.BACKWARD, n, input_grad=True))
    without = features(Call(layer, Direction.BACKWARD, n, input_grad=False))
    assert with_din[mac] == without[mac] == pairs * macs  # dw: every valid tap, always
    din_mac = "din_mac" if layer.stride[1] == 1 else "strided_din_mac"
    assert with_din[din_mac] == pairs * macs and without[din_mac] == 0  # dx: only when wanted
    assert without["input"] == 0 < with_din["input"]


@pytest.mark.parametrize("seed", range(100))
def test_maxpool2d_reads_each_window_inside_the_input(seed: int) -> None:
    rng = random.Random(seed)
    layer = random_window_layer(rng, LayerKind.MAXPOOL2D)
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
    assert features(Call(layer, Direction.FORWARD, n))["window"] == planes * read
    assert features(Call(layer, Direction.BACKWARD, n))["window"] == 2 * planes * read
    # Without an input gradient to compute, the backward is the call and nothing else.
    skipped = features(Call(layer, Direction.BACKWARD, n, input_grad=False))
    assert {name: v for name, v in skipped.items() if v} == {"call": 1}


def test_linear_counts_its_multiply_accumulates() -> None:
    layer = Layer(LayerKind.LINEAR, (64,), (10,), bias=True)
    assert features(Call(layer, Direction.FORWARD, 5))["mac"] == 5 * 64 * 10
    assert features(Call(layer, Direction.BACKWARD, 5))["mac"] == 2 * 5 * 64 * 10
    assert features(Call(layer, Direction.BACKWARD, 5, input_grad=False))["mac"] == 5 * 64 * 10


def test_a_flatten_costs_one_call_whatever_its_size() -> None:
    small = Layer(LayerKind.FLATTEN, (1, 2, 2), (4,))
    large = Layer(LayerKind.FLATTEN, (8, 16, 16), (2048,))
    for direction in Direction:
        assert features(Call(small, direction, 1)) == features(Call(large, direction, 64))
