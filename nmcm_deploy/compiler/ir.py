"""The intermediate representation: a chain of the six supported layers with per-sample shapes.

Shapes are per sample (no batch dimension): ``(C, H, W)`` for images, ``(F,)`` for features.
This module is pure Python (no torch) so that validating an inline-layer manifest stays fast.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import IntEnum

from nmcm_deploy.errors import ModelError

Shape = tuple[int, ...]


class LayerKind(IntEnum):
    """Layer kinds; the numbers are the blob's layer-table codes (docs/blob-format.md)."""

    LINEAR = 1
    CONV2D = 2
    RELU = 3
    FLATTEN = 4
    SOFTMAX = 5
    MAXPOOL2D = 6

    @property
    def label(self) -> str:
        return self.name.lower()


SUPPORTED = ", ".join(k.label for k in LayerKind)


@dataclass(frozen=True)
class Layer:
    """One layer of the chain. ``kernel``, ``stride`` and ``padding`` are (h, w) pairs."""

    kind: LayerKind
    in_shape: Shape
    out_shape: Shape
    kernel: tuple[int, int] = (0, 0)
    stride: tuple[int, int] = (0, 0)
    padding: tuple[int, int] = (0, 0)
    bias: bool = False
    # PyTorch parameter names, e.g. {"weight": "0.weight", "bias": "0.bias"}.
    param_names: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    # Where the layer came from, for messages: "spec.model.layers[2]" or an fx node name.
    source: str = field(default="", compare=False, hash=False)

    @property
    def weight_shape(self) -> Shape | None:
        if self.kind is LayerKind.LINEAR:
            return (self.out_shape[0], self.in_shape[0])
        if self.kind is LayerKind.CONV2D:
            return (self.out_shape[0], self.in_shape[0], *self.kernel)
        return None

    @property
    def bias_shape(self) -> Shape | None:
        if self.bias and self.kind in (LayerKind.LINEAR, LayerKind.CONV2D):
            return (self.out_shape[0],)
        return None

    @property
    def parameters(self) -> int:
        return sum(numel(s) for s in (self.weight_shape, self.bias_shape) if s is not None)

    def macs(self) -> int:
        """Multiply-accumulates of the forward pass for one sample."""
        if self.kind is LayerKind.LINEAR:
            return self.in_shape[0] * self.out_shape[0]
        if self.kind is LayerKind.CONV2D:
            return numel(self.out_shape) * self.in_shape[0] * self.kernel[0] * self.kernel[1]
        return 0

    def describe(self) -> str:
        if self.kind is LayerKind.LINEAR:
            return f"linear {self.in_shape[0]}->{self.out_shape[0]}"
        if self.kind is LayerKind.CONV2D:
            return (
                f"conv2d {self.in_shape[0]}->{self.out_shape[0]} k{self.kernel[0]}x{self.kernel[1]}"
                f" s{self.stride[0]} p{self.padding[0]}"
            )
        if self.kind is LayerKind.MAXPOOL2D:
            return f"maxpool2d k{self.kernel[0]} s{self.stride[0]} p{self.padding[0]}"
        return self.kind.label

    def canonical(self) -> dict[str, object]:
        return {
            "kind": self.kind.label,
            "in": list(self.in_shape),
            "out": list(self.out_shape),
            "kernel": list(self.kernel),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "bias": self.bias,
        }


def numel(shape: Shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


@dataclass(frozen=True)
class ModelIR:
    input_shape: Shape
    layers: tuple[Layer, ...]

    @property
    def output_shape(self) -> Shape:
        return self.layers[-1].out_shape if self.layers else self.input_shape

    @property
    def ends_in_softmax(self) -> bool:
        return bool(self.layers) and self.layers[-1].kind is LayerKind.SOFTMAX

    def model_hash(self) -> bytes:
        """16 bytes identifying the model's structure (not its weights)."""
        doc = {"input": list(self.input_shape), "layers": [ly.canonical() for ly in self.layers]}
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).digest()[:16]


def _pair(value: object, name: str, where: str) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ModelError(f"{name} must be an integer or a pair of integers", where=where)
    if isinstance(value, int):
        return (value, value)
    if (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise ModelError(f"{name} must be an integer or a pair of integers, got {value!r}", where=where)


def conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def make_layer(
    kind: LayerKind,
    in_shape: Shape,
    *,
    out_features: int | None = None,
    out_channels: int | None = None,
    kernel_size: object = None,
    stride: object = None,
    padding: object = 0,
    bias: bool = True,
    where: str = "",
) -> Layer:
    """Build one layer from its options and infer its output shape, or raise ModelError."""
    if kind is LayerKind.LINEAR:
        if len(in_shape) != 1:
            raise ModelError(
                f"linear needs a 1-D input (features) but gets shape {list(in_shape)}",
                where=where,
                hint="insert {type: flatten} before it",
            )
        if not out_features or out_features < 1:
            raise ModelError("linear needs out_features >= 1", where=where)
        return Layer(kind, in_shape, (out_features,), bias=bias, source=where)
    if kind in (LayerKind.CONV2D, LayerKind.MAXPOOL2D):
        label = kind.label
        if len(in_shape) != 3:
            raise ModelError(
                f"{label} needs a (C, H, W) input but gets shape {list(in_shape)}", where=where
            )
        k = _pair(kernel_size, "kernel_size", where)
        default_stride = 1 if kind is LayerKind.CONV2D else k
        s = _pair(stride if stride is not None else default_stride, "stride", where)
        p = _pair(padding, "padding", where)
        if min(k) < 1 or min(s) < 1 or min(p) < 0:
            raise ModelError("kernel_size and stride must be >= 1, padding >= 0", where=where)
        c, h, w = in_shape
        if kind is LayerKind.MAXPOOL2D and (p[0] * 2 > k[0] or p[1] * 2 > k[1]):
            raise ModelError(
                f"maxpool2d padding {list(p)} must be at most half the kernel {list(k)}",
                where=where,
            )
        if k[0] > h + 2 * p[0] or k[1] > w + 2 * p[1]:
            raise ModelError(
                f"{label} kernel {k[0]}x{k[1]} is larger than its padded input "
                f"{h + 2 * p[0]}x{w + 2 * p[1]} (input {c}x{h}x{w}, padding {list(p)})",
                where=where,
            )
        oh, ow = conv_out(h, k[0], s[0], p[0]), conv_out(w, k[1], s[1], p[1])
        if kind is LayerKind.CONV2D:
            if not out_channels or out_channels < 1:
                raise ModelError("conv2d needs out_channels >= 1", where=where)
            return Layer(kind, in_shape, (out_channels, oh, ow), k, s, p, bias=bias, source=where)
        return Layer(kind, in_shape, (c, oh, ow), k, s, p, source=where)
    if kind is LayerKind.RELU:
        return Layer(kind, in_shape, in_shape, source=where)
    if kind is LayerKind.FLATTEN:
        return Layer(kind, in_shape, (numel(in_shape),), source=where)
    if kind is LayerKind.SOFTMAX:
        if len(in_shape) != 1:
            raise ModelError(
                f"softmax works over features and needs a 1-D input, got shape {list(in_shape)}",
                where=where,
                hint="insert {type: flatten} before it",
            )
        return Layer(kind, in_shape, in_shape, source=where)
    raise ModelError(f"unsupported layer {kind!r}; supported: {SUPPORTED}", where=where)
