"""Shape inference of the pure-Python IR against torch, and the torch.fx front-end."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nmcm_deploy.compiler.frontend import inline_module, load_factory, trace
from nmcm_deploy.compiler.inline import inline_ir
from nmcm_deploy.compiler.ir import LayerKind
from nmcm_deploy.errors import ModelError


def random_spec(rng: random.Random) -> tuple[list[int], list[dict[str, object]]]:
    """A random valid chain: a convolutional part, flatten, a dense part, maybe a softmax."""
    c, h, w = rng.randint(1, 3), rng.randint(5, 12), rng.randint(5, 12)
    input_shape = [c, h, w]
    layers: list[dict[str, object]] = []
    for _ in range(rng.randint(0, 3)):
        if rng.random() < 0.6:
            k = rng.randint(1, min(h, w, 4))
            p = rng.randint(0, k // 2 + 1)
            s = rng.randint(1, 2)
            layers.append(
                {
                    "type": "conv2d",
                    "out_channels": rng.randint(1, 5),
                    "kernel_size": k,
                    "stride": s,
                    "padding": p,
                    "bias": rng.random() < 0.7,
                }
            )
            h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
            if rng.random() < 0.5:
                layers.append({"type": "relu"})
        elif min(h, w) >= 2:
            k = rng.randint(1, min(h, w, 3))
            p = rng.randint(0, k // 2)
            s = rng.randint(1, k)
            layers.append({"type": "maxpool2d", "kernel_size": k, "stride": s, "padding": p})
            h, w = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    layers.append({"type": "flatten"})
    for _ in range(rng.randint(1, 3)):
        layers.append({"type": "linear", "out_features": rng.randint(1, 12)})
        if rng.random() < 0.5:
            layers.append({"type": "relu"})
    if rng.random() < 0.5:
        layers.append({"type": "softmax"})
    return input_shape, layers


@pytest.mark.parametrize("seed", range(40))
def test_inline_shapes_match_torch(seed: int) -> None:
    input_shape, layers = random_spec(random.Random(seed))
    ir = inline_ir(input_shape, layers)
    module = inline_module(ir, seed=0)
    x = torch.zeros(2, *input_shape)
    for layer, torch_layer in zip(ir.layers, module, strict=True):
        x = torch_layer(x)
        assert tuple(x.shape[1:]) == layer.out_shape, layer.describe()
    # And the traced module gives back the same IR.
    assert trace(module, tuple(input_shape)).layers == ir.layers


def test_inline_param_names_are_the_sequential_names() -> None:
    ir = inline_ir(
        [4],
        [
            {"type": "linear", "out_features": 3},
            {"type": "relu"},
            {"type": "linear", "out_features": 2, "bias": False},
        ],
    )
    names = [ly.param_names for ly in ir.layers]
    assert names == [{"weight": "0.weight", "bias": "0.bias"}, {}, {"weight": "2.weight"}]
    assert set(inline_module(ir, 0).state_dict()) == {"0.weight", "0.bias", "2.weight"}


@pytest.mark.parametrize(
    ("input_shape", "layers", "message"),
    [
        (
            [1, 4, 4],
            [{"type": "conv2d", "out_channels": 2, "kernel_size": 7}],
            "larger than its padded input",
        ),
        ([1, 4, 4], [{"type": "linear", "out_features": 2}], "needs a 1-D input"),
        (
            [16],
            [{"type": "conv2d", "out_channels": 2, "kernel_size": 3}],
            "needs a (C, H, W) input",
        ),
        ([1, 4, 4], [{"type": "softmax"}], "over features"),
        ([1, 4, 4], [{"type": "maxpool2d", "kernel_size": 2, "padding": 2}], "at most half"),
        ([1, 4, 4], [{"type": "batchnorm"}], "supported: linear, conv2d"),
        ([1, 4, 4], [{"type": "relu", "inplace": True}], "relu has no option inplace"),
    ],
)
def test_inline_errors_name_the_layer(
    input_shape: list[int], layers: list[dict[str, object]], message: str
) -> None:
    with pytest.raises(ModelError) as info:
        inline_ir(input_shape, layers)
    assert message in info.value.message
    assert "spec.model.layers[0]" in info.value.message


class FunctionalNet(nn.Module):
    """The digits CNN written the way people write models, not as nn.Sequential."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        x = x.view(x.size(0), -1)
        return F.softmax(self.head(x), dim=1)


class FlattenStyles(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(x)
        x = torch.flatten(x, 1)
        return torch.softmax(self.fc(x).relu(), dim=-1)


def test_functional_module_traces_to_six_layers() -> None:
    ir = trace(FunctionalNet(), (1, 8, 8))
    assert [ly.kind for ly in ir.layers] == [
        LayerKind.CONV2D,
        LayerKind.RELU,
        LayerKind.MAXPOOL2D,
        LayerKind.FLATTEN,
        LayerKind.LINEAR,
        LayerKind.SOFTMAX,
    ]
    assert ir.layers[0].param_names == {"weight": "conv.weight", "bias": "conv.bias"}
    assert ir.layers[4].param_names == {"weight": "head.weight", "bias": "head.bias"}
    assert ir.layers[2].out_shape == (4, 4, 4)


def test_torch_functions_and_methods_trace() -> None:
    ir = trace(FlattenStyles(), (1, 4, 4))
    assert [ly.kind.label for ly in ir.layers] == ["relu", "flatten", "linear", "relu", "softmax"]


def test_nested_sequential_traces_with_dotted_names() -> None:
    model = nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(16, 8)), nn.ReLU(), nn.Linear(8, 2))
    ir = trace(model, (1, 4, 4))
    assert ir.layers[1].param_names["weight"] == "0.1.weight"
    assert ir.layers[3].param_names["bias"] == "2.bias"


class WithBatchNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.norm = nn.BatchNorm1d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.fc(x))


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) + x


class Sigmoid(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(x)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (WithBatchNorm(), "unsupported module BatchNorm1d"),
        (Residual(), "single chain"),
        (Sigmoid(), "unsupported function sigmoid"),
        (nn.Sequential(nn.Conv2d(1, 2, 3, dilation=2)), "dilation=1"),
        (nn.Sequential(nn.Softmax(dim=0)), "dim=1"),
    ],
)
def test_unsupported_ops_are_named(model: nn.Module, message: str) -> None:
    shape = (
        (1, 8, 8) if isinstance(model, nn.Sequential) and isinstance(model[0], nn.Conv2d) else (4,)
    )
    with pytest.raises(ModelError) as info:
        trace(model, shape)
    assert message in info.value.message


def test_factory_loading(tmp_path: Path) -> None:
    source = tmp_path / "net.py"
    source.write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n"
        "def broken():\n"
        "    raise ValueError('no')\n"
    )
    a = load_factory(source, "build", seed=3)
    b = load_factory(source, "build", seed=3)
    assert torch.equal(a.state_dict()["1.weight"], b.state_dict()["1.weight"])
    with pytest.raises(ModelError, match="has no callable 'missing'"):
        load_factory(source, "missing", seed=0)
    with pytest.raises(ModelError, match="raised ValueError"):
        load_factory(source, "broken", seed=0)
    with pytest.raises(ModelError, match="does not exist"):
        load_factory(tmp_path / "nope.py", "build", seed=0)
