"""Every layer's forward and every gradient, and the losses, against PyTorch autograd, through the
host build of the engine (nmcm-train). One line per case; tolerance LAYER_RTOL (engine_helpers).

A layer runs as a middle stage of a pipeline (stage 1 of 3): it gets an upstream gradient and
returns the gradient for its input, the path every layer takes in a split model.
"""

from __future__ import annotations

from tests.engine_helpers import helper_test_layer, helper_test_loss


def test_linear() -> None:
    helper_test_layer([16], {"type": "linear", "out_features": 8})


def test_linear_no_bias() -> None:
    helper_test_layer([16], {"type": "linear", "out_features": 8, "bias": False})


def test_linear_long_sums() -> None:
    helper_test_layer([1024], {"type": "linear", "out_features": 24}, n=16)


def test_conv2d_digits() -> None:
    helper_test_layer(
        [1, 8, 8], {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1}
    )


def test_conv2d_channels() -> None:
    helper_test_layer([3, 9, 9], {"type": "conv2d", "out_channels": 5, "kernel_size": 3})


def test_conv2d_stride_padding() -> None:
    helper_test_layer(
        [3, 9, 9],
        {"type": "conv2d", "out_channels": 4, "kernel_size": 3, "stride": 2, "padding": 2},
    )


def test_conv2d_rectangular() -> None:
    helper_test_layer(
        [2, 7, 10],
        {
            "type": "conv2d",
            "out_channels": 3,
            "kernel_size": [2, 4],
            "stride": [2, 1],
            "padding": [1, 0],
        },
    )


def test_conv2d_pointwise_no_bias() -> None:
    helper_test_layer(
        [4, 5, 5], {"type": "conv2d", "out_channels": 6, "kernel_size": 1, "bias": False}
    )


def test_conv2d_padding_beyond_kernel() -> None:
    helper_test_layer(
        [2, 4, 4], {"type": "conv2d", "out_channels": 2, "kernel_size": 2, "padding": 3}
    )


def test_conv2d_large() -> None:
    helper_test_layer(
        [8, 16, 16], {"type": "conv2d", "out_channels": 16, "kernel_size": 5, "padding": 2}
    )


def test_maxpool2d() -> None:
    helper_test_layer([3, 8, 8], {"type": "maxpool2d", "kernel_size": 2})


def test_maxpool2d_ties() -> None:
    helper_test_layer([3, 8, 8], {"type": "maxpool2d", "kernel_size": 2}, ties=True)


def test_maxpool2d_overlapping_ties_padding() -> None:
    helper_test_layer(
        [2, 9, 7], {"type": "maxpool2d", "kernel_size": 3, "stride": 1, "padding": 1}, ties=True
    )


def test_maxpool2d_stride_padding() -> None:
    helper_test_layer([3, 9, 9], {"type": "maxpool2d", "kernel_size": 3, "stride": 2, "padding": 1})


def test_maxpool2d_rectangular() -> None:
    helper_test_layer(
        [2, 7, 9], {"type": "maxpool2d", "kernel_size": [3, 2], "stride": [2, 3], "padding": [1, 1]}
    )


def test_relu() -> None:
    helper_test_layer([3, 5, 5], {"type": "relu"})


def test_relu_exact_zeros() -> None:
    helper_test_layer([40], {"type": "relu"}, ties=True)


def test_flatten() -> None:
    helper_test_layer([3, 4, 5], {"type": "flatten"})


def test_softmax() -> None:
    helper_test_layer([10], {"type": "softmax"})


def test_softmax_large_inputs() -> None:
    helper_test_layer([10], {"type": "softmax"}, scale=30.0)


def test_micro_batches_and_slots() -> None:
    helper_test_layer(
        [2, 6, 6],
        {"type": "conv2d", "out_channels": 3, "kernel_size": 3, "padding": 1},
        n=7,
        micro_batch=3,
        slots=2,
    )


def test_cross_entropy_on_logits() -> None:
    helper_test_loss(12, {"type": "linear", "out_features": 5}, "cross_entropy")


def test_cross_entropy_after_softmax() -> None:
    helper_test_loss(10, {"type": "softmax"}, "cross_entropy")


def test_cross_entropy_after_softmax_confident() -> None:
    helper_test_loss(10, {"type": "softmax"}, "cross_entropy", scale=10.0)


def test_mse_on_linear() -> None:
    helper_test_loss(12, {"type": "linear", "out_features": 5}, "mse")


def test_mse_after_softmax() -> None:
    helper_test_loss(10, {"type": "softmax"}, "mse")


def test_loss_over_micro_batches() -> None:
    helper_test_loss(8, {"type": "linear", "out_features": 4}, "cross_entropy", n=9, micro_batch=4)
