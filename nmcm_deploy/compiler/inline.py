"""Inline-layer models (``spec.model.layers``) to IR, in pure Python: no torch needed."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from nmcm_deploy.compiler.ir import Layer, LayerKind, ModelIR, Shape, make_layer
from nmcm_deploy.errors import ModelError

_KINDS = {k.label: k for k in LayerKind}
_OPTIONS = {
    LayerKind.LINEAR: {"out_features", "bias"},
    LayerKind.CONV2D: {"out_channels", "kernel_size", "stride", "padding", "bias"},
    LayerKind.MAXPOOL2D: {"kernel_size", "stride", "padding"},
    LayerKind.RELU: set(),
    LayerKind.FLATTEN: set(),
    LayerKind.SOFTMAX: set(),
}


def layer_where(index: int) -> str:
    return f"spec.model.layers[{index}]"


def inline_ir(input_shape: Sequence[int], layers: Sequence[dict[str, Any]]) -> ModelIR:
    """Infer every layer's shape; raises ModelError naming the layer's manifest path."""
    shape: Shape = tuple(int(d) for d in input_shape)
    if len(shape) not in (1, 3) or min(shape, default=0) < 1:
        raise ModelError(
            f"input must be [C, H, W] or [features] of positive sizes, got {list(shape)}",
            where="spec.model.input",
        )
    out: list[Layer] = []
    for i, spec in enumerate(layers):
        where = layer_where(i)
        kind = _KINDS.get(str(spec.get("type", "")))
        if kind is None:
            raise ModelError(
                f"unsupported layer type {spec.get('type')!r}; supported: {', '.join(_KINDS)}",
                where=where,
            )
        unknown = set(spec) - {"type"} - _OPTIONS[kind]
        if unknown:
            allowed = ", ".join(sorted(_OPTIONS[kind])) or "none"
            raise ModelError(
                f"{kind.label} has no option {', '.join(sorted(unknown))}; its options: {allowed}",
                where=where,
            )
        layer = make_layer(
            kind,
            shape,
            out_features=spec.get("out_features"),
            out_channels=spec.get("out_channels"),
            kernel_size=spec.get("kernel_size"),
            stride=spec.get("stride"),
            padding=spec.get("padding", 0),
            bias=bool(spec.get("bias", True)),
            where=where,
        )
        names = {}
        if layer.weight_shape is not None:
            names["weight"] = f"{i}.weight"
        if layer.bias_shape is not None:
            names["bias"] = f"{i}.bias"
        out.append(
            Layer(
                layer.kind,
                layer.in_shape,
                layer.out_shape,
                layer.kernel,
                layer.stride,
                layer.padding,
                layer.bias,
                names,
                where,
            )
        )
        shape = layer.out_shape
    if not out:
        raise ModelError("the model has no layers", where="spec.model.layers")
    return ModelIR(tuple(int(d) for d in input_shape), tuple(out))
