"""PyTorch models to IR: build inline models, load factories and weights, trace with torch.fx.

This is the only compiler module that imports torch; ``nmcm validate`` of an inline-layer manifest
never reaches it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import operator
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from nmcm_deploy.compiler.ir import SUPPORTED, Layer, LayerKind, ModelIR, Shape, make_layer
from nmcm_deploy.compiler.memory import TensorInfo
from nmcm_deploy.errors import ModelError


def inline_module(ir: ModelIR, seed: int) -> nn.Sequential:
    """The nn.Sequential an inline-layer IR stands for, initialised deterministically from seed.

    Parameter names are ``<layer index>.weight`` / ``.bias``, as ``inline_ir`` records them.
    """
    torch.manual_seed(seed)
    modules: list[nn.Module] = []
    for layer in ir.layers:
        if layer.kind is LayerKind.LINEAR:
            modules.append(nn.Linear(layer.in_shape[0], layer.out_shape[0], bias=layer.bias))
        elif layer.kind is LayerKind.CONV2D:
            modules.append(
                nn.Conv2d(
                    layer.in_shape[0],
                    layer.out_shape[0],
                    layer.kernel,
                    stride=layer.stride,
                    padding=layer.padding,
                    bias=layer.bias,
                )
            )
        elif layer.kind is LayerKind.RELU:
            modules.append(nn.ReLU())
        elif layer.kind is LayerKind.FLATTEN:
            modules.append(nn.Flatten())
        elif layer.kind is LayerKind.SOFTMAX:
            modules.append(nn.Softmax(dim=1))
        else:
            modules.append(nn.MaxPool2d(layer.kernel, layer.stride, layer.padding))
    return nn.Sequential(*modules)


# A factory is the user's code: importing it, calling it and tracing its module run under a time
# limit, so that one that never returns ends in an error naming it, not a silent hang.
TRACE_TIMEOUT_ENV = "NMCM_TRACE_TIMEOUT"
DEFAULT_TRACE_TIMEOUT_S = 60.0


class _OutOfTime(BaseException):  # not an Exception: the user's `except Exception` lets it by
    pass


def trace_timeout() -> float:
    """Seconds the factory may take: $NMCM_TRACE_TIMEOUT, else a minute."""
    text = os.environ.get(TRACE_TIMEOUT_ENV, "")
    if not text:
        return DEFAULT_TRACE_TIMEOUT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise ModelError(f"{TRACE_TIMEOUT_ENV}={text!r} is not a positive number of seconds")
    return seconds


@contextlib.contextmanager
def factory_time_limit(file: Path, factory: str) -> Iterator[None]:
    """Raise ModelError if the block (the factory's import, call and tracing) outlasts
    trace_timeout(). A timer signal interrupts Python code; only the main thread gets one, so
    elsewhere the block runs unbounded."""
    seconds = trace_timeout()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def out_of_time(signum: int, frame: object) -> None:
        raise _OutOfTime

    previous = signal.signal(signal.SIGALRM, out_of_time)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _OutOfTime:
        raise ModelError(
            f"{file.name}: {factory}() did not finish within {seconds:g} s",
            where="spec.model.source.factory",
            hint=f"a factory builds the model and returns it; allow it longer with "
            f"{TRACE_TIMEOUT_ENV}=SECONDS",
        ) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_finite_weights(model: nn.Module, where: str, what: str) -> None:
    """Refuse starting weights that hold a NaN or infinity, naming the tensor and its index."""
    for key, value in model.state_dict().items():
        values = value.detach().to(torch.float32).numpy()
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            index = ", ".join(str(int(i)) for i in np.unravel_index(int(bad[0]), values.shape))
            raise ModelError(
                f"{what}: {key}[{index}] is {values.reshape(-1)[bad[0]]}; starting weights must "
                f"be finite ({len(bad)} values are not)",
                where=where,
            )


def load_factory(file: Path, factory: str, seed: int) -> nn.Module:
    """Import ``file`` and call ``factory()`` with torch seeded, so default init is reproducible."""
    if not file.is_file():
        raise ModelError(f"model source {file} does not exist", where="spec.model.source.file")
    name = f"nmcm_model_{abs(hash(str(file.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise ModelError(f"cannot import {file}", where="spec.model.source.file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: report, don't crash
        raise ModelError(
            f"importing {file} failed: {type(exc).__name__}: {exc}", where="spec.model.source.file"
        ) from exc
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise ModelError(f"{file} has no callable {factory!r}", where="spec.model.source.factory")
    torch.manual_seed(seed)
    try:
        model = fn()
    except Exception as exc:
        raise ModelError(
            f"{factory}() raised {type(exc).__name__}: {exc}", where="spec.model.source.factory"
        ) from exc
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"{factory}() returned {type(model).__name__}, not a torch.nn.Module",
            where="spec.model.source.factory",
        )
    return model


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a state_dict file into model; every parameter must be present with its shape."""
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist", where="spec.model.weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(
            f"{path} is not a readable state_dict: {exc}", where="spec.model.weights"
        ) from exc
    if not isinstance(state, dict):
        raise ModelError(
            f"{path} holds a {type(state).__name__}, not a state_dict", where="spec.model.weights"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise ModelError(
            f"{path} does not match the model: {' '.join(s.strip() for s in first[:3])}",
            where="spec.model.weights",
        ) from exc


# --- tracing -------------------------------------------------------------------------------------

_RELU_FNS: set[Any] = {F.relu, torch.relu}
_SOFTMAX_FNS: set[Any] = {F.softmax, torch.softmax}
_FLATTEN_FNS: set[Any] = {torch.flatten}
_MAXPOOL_FNS: set[Any] = {F.max_pool2d}


def _arg(node: fx.Node, pos: int, name: str, default: Any) -> Any:
    if len(node.args) > pos:
        return node.args[pos]
    return node.kwargs.get(name, default)


def trace(model: nn.Module, input_shape: Shape) -> ModelIR:
    """Trace ``model`` into the six-layer IR, checking every op, then check shapes with torch."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as exc:
        raise ModelError(
            f"torch.fx cannot trace the model ({type(exc).__name__}: {exc})",
            hint="models must be a straight chain of the supported layers, without data-dependent "
            "control flow",
        ) from exc
    modules = dict(model.named_modules())
    layers: list[Layer] = []
    shape: Shape = tuple(input_shape)
    current: fx.Node | None = None
    size_nodes: set[fx.Node] = set()

    def add(
        kind: LayerKind, node: fx.Node, names: dict[str, str] | None = None, **opts: Any
    ) -> None:
        nonlocal shape, current
        where = f"{node.op} {node.target if node.op != 'call_function' else _fname(node.target)}"
        where = f"model node '{node.name}' ({where})"
        layer = make_layer(kind, shape, where=where, **opts)
        layers.append(
            Layer(
                layer.kind,
                layer.in_shape,
                layer.out_shape,
                layer.kernel,
                layer.stride,
                layer.padding,
                layer.bias,
                names or {},
                where,
            )
        )
        shape = layer.out_shape
        current = node

    for node in graph.nodes:
        if node.op == "placeholder":
            if current is not None:
                raise ModelError("the model takes more than one input", where=node.name)
            current = node
            continue
        if node.op == "output":
            if node.args[0] is not current:
                raise ModelError("the model's output is not the end of its layer chain")
            continue
        inputs = [a for a in node.all_input_nodes if a not in size_nodes]
        if node.op == "call_method" and node.target == "size":
            if inputs != [current]:
                raise ModelError(
                    "size() of something other than the running tensor", where=node.name
                )
            size_nodes.add(node)
            continue
        if inputs != [current]:
            raise ModelError(
                f"node '{node.name}' does not continue a single chain of layers "
                "(branches, residual connections and multiple inputs are not supported)",
            )
        _map_node(node, modules, add)

    if not layers:
        raise ModelError("the model has no layers")
    ir = ModelIR(tuple(input_shape), tuple(layers))
    _check_shapes_with_torch(model, ir)
    return ir


def _fname(target: Any) -> str:
    return getattr(target, "__name__", str(target))


def _map_node(node: fx.Node, modules: dict[str, nn.Module], add: Callable[..., None]) -> None:
    if node.op == "call_module":
        mod = modules[str(node.target)]
        prefix = f"{node.target}."
        if isinstance(mod, nn.Linear):
            names = {"weight": prefix + "weight"}
            if mod.bias is not None:
                names["bias"] = prefix + "bias"
            add(
                LayerKind.LINEAR,
                node,
                names,
                out_features=mod.out_features,
                bias=mod.bias is not None,
            )
            return
        if isinstance(mod, nn.Conv2d):
            if mod.groups != 1 or mod.dilation != (1, 1) or mod.padding_mode != "zeros":
                raise ModelError(
                    "conv2d supports groups=1, dilation=1 and zero padding only", where=node.name
                )
            if isinstance(mod.padding, str):
                raise ModelError(
                    f"conv2d padding={mod.padding!r}: give the padding as numbers", where=node.name
                )
            names = {"weight": prefix + "weight"}
            if mod.bias is not None:
                names["bias"] = prefix + "bias"
            add(
                LayerKind.CONV2D,
                node,
                names,
                out_channels=mod.out_channels,
                kernel_size=tuple(mod.kernel_size),
                stride=tuple(mod.stride),
                padding=tuple(mod.padding),
                bias=mod.bias is not None,
            )
            return
        if isinstance(mod, nn.ReLU):
            add(LayerKind.RELU, node)
            return
        if isinstance(mod, nn.Flatten):
            if mod.start_dim != 1 or mod.end_dim != -1:
                raise ModelError(
                    "flatten must flatten every dimension after the batch", where=node.name
                )
            add(LayerKind.FLATTEN, node)
            return
        if isinstance(mod, nn.Softmax):
            if mod.dim not in (1, -1):
                raise ModelError("softmax must be over the features (dim=1)", where=node.name)
            add(LayerKind.SOFTMAX, node)
            return
        if isinstance(mod, nn.MaxPool2d):
            _maxpool(
                node, add, mod.kernel_size, mod.stride, mod.padding, mod.dilation, mod.ceil_mode
            )
            return
        raise ModelError(
            f"unsupported module {type(mod).__name__}; supported layers: {SUPPORTED}",
            where=f"model node '{node.name}' ({node.target})",
        )
    if node.op == "call_function":
        fn = node.target
        if fn in _RELU_FNS:
            add(LayerKind.RELU, node)
            return
        if fn in _SOFTMAX_FNS:
            if _arg(node, 1, "dim", None) not in (1, -1):
                raise ModelError("softmax must be over the features (dim=1)", where=node.name)
            add(LayerKind.SOFTMAX, node)
            return
        if fn in _FLATTEN_FNS:
            if _arg(node, 1, "start_dim", 0) != 1 or _arg(node, 2, "end_dim", -1) != -1:
                raise ModelError(
                    "use torch.flatten(x, 1): keep the batch dimension", where=node.name
                )
            add(LayerKind.FLATTEN, node)
            return
        if fn in _MAXPOOL_FNS:
            k = _arg(node, 1, "kernel_size", None)
            s = _arg(node, 2, "stride", None)
            _maxpool(
                node,
                add,
                k,
                s if s not in (None, [], ()) else k,
                _arg(node, 3, "padding", 0),
                _arg(node, 4, "dilation", 1),
                _arg(node, 5, "ceil_mode", False),
            )
            return
        if fn is operator.getitem:
            raise ModelError("indexing tensors is not supported", where=node.name)
        raise ModelError(
            f"unsupported function {_fname(fn)}; supported layers: {SUPPORTED}",
            where=f"model node '{node.name}'",
        )
    if node.op == "call_method":
        method = str(node.target)
        if method == "relu":
            add(LayerKind.RELU, node)
            return
        if method == "softmax":
            if _arg(node, 1, "dim", None) not in (1, -1):
                raise ModelError("softmax must be over the features (dim=1)", where=node.name)
            add(LayerKind.SOFTMAX, node)
            return
        if method in ("view", "reshape", "flatten"):
            if method == "flatten":
                ok = _arg(node, 1, "start_dim", 0) == 1 and _arg(node, 2, "end_dim", -1) == -1
            else:
                dims = list(node.args[1:])
                if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
                    dims = list(dims[0])
                ok = len(dims) == 2 and dims[1] == -1 and _is_batch_dim(dims[0])
            if not ok:
                raise ModelError(
                    f"x.{method}(...) must flatten to (batch, -1), e.g. x.view(x.size(0), -1)",
                    where=node.name,
                )
            add(LayerKind.FLATTEN, node)
            return
        raise ModelError(
            f"unsupported tensor method .{method}(); supported layers: {SUPPORTED}",
            where=f"model node '{node.name}'",
        )
    raise ModelError(f"unsupported graph node {node.op} {node.target}", where=node.name)


def _is_batch_dim(value: Any) -> bool:
    if isinstance(value, fx.Node):
        return (
            value.op == "call_method"
            and value.target == "size"
            and _arg(value, 1, "dim", None) == 0
        )
    return False


def _maxpool(
    node: fx.Node,
    add: Callable[..., None],
    kernel: Any,
    stride: Any,
    padding: Any,
    dilation: Any,
    ceil_mode: Any,
) -> None:
    if dilation not in (1, (1, 1), [1, 1]) or ceil_mode:
        raise ModelError("maxpool2d supports dilation=1 and ceil_mode=False only", where=node.name)
    add(
        LayerKind.MAXPOOL2D,
        node,
        kernel_size=_tup(kernel),
        stride=_tup(stride),
        padding=_tup(padding),
    )


def _tup(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _check_shapes_with_torch(model: nn.Module, ir: ModelIR) -> None:
    """Run torch once on zeros and compare its output shape with the IR's inference."""
    with torch.no_grad():
        try:
            out = model(torch.zeros(1, *ir.input_shape))
        except Exception as exc:
            raise ModelError(
                f"the model fails on an input of shape {[1, *ir.input_shape]}: {exc}"
            ) from exc
    if tuple(out.shape[1:]) != ir.output_shape:
        raise ModelError(
            f"torch gives output shape {list(out.shape[1:])}, the IR {list(ir.output_shape)}"
        )


def stage_weights(
    state: dict[str, torch.Tensor], layers: tuple[Layer, ...], tensors: tuple[TensorInfo, ...]
) -> list[np.ndarray]:
    """The stage's parameter arrays in the plan's tensor order, from the module's state_dict."""
    out = []
    for t in tensors:
        name = layers[t.layer].param_names[t.role]
        out.append(state[name].detach().cpu().numpy().astype(np.float32).reshape(t.shape))
    return out
