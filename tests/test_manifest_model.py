"""load_manifest: the typed view of a valid manifest, and ManifestInvalid with every problem."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from nmcm_deploy.compiler.ir import LayerKind
from nmcm_deploy.errors import ManifestInvalid, ModelError
from nmcm_deploy.manifest import load_manifest
from nmcm_deploy.manifest.loader import load_yaml
from nmcm_deploy.manifest.model import build_manifest

VALID = Path(__file__).parent / "manifests" / "valid"
INVALID = Path(__file__).parent / "manifests" / "invalid"


def test_design_example_is_typed() -> None:
    m = load_manifest(VALID / "design-example.yaml")
    assert m.name == "digits-f413-h7a3"
    assert m.target == "sim"
    assert m.model.input == (1, 8, 8)
    assert [layer.type for layer in m.model.layers] == [
        "conv2d", "relu", "maxpool2d", "flatten", "linear", "softmax",
    ]  # fmt: skip
    assert m.model.layers[0].options() == {
        "type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1,
    }  # fmt: skip
    assert m.training.optimizer.momentum == 0.9
    assert m.training.micro_batch_size == 16
    assert m.network.subnet == ipaddress.IPv4Network("192.168.50.0/24")
    assert m.network.port == 5000
    f413, h7a3 = m.nodes
    assert f413.probe is not None and f413.probe.uid == "0670FF3833..."
    assert h7a3.probe is None
    assert h7a3.w5500 is not None and h7a3.w5500.mac_bytes == bytes([2, 0x4E, 0x4D, 0, 0, 2])
    assert [(s.node, s.layers) for s in m.stages] == [("f413", (0, 3)), ("h7a3", (4, 5))]
    assert not m.stages_auto
    assert m.node("h7a3") is h7a3


def test_defaults_are_filled_in() -> None:
    m = load_manifest(VALID / "minimal.yaml")
    assert m.target == "sim"
    assert m.stages == () and m.stages_auto
    assert m.model.seed == 0 and m.model.weights is None and m.model.source is None
    assert m.dataset.name == "sklearn-digits" and m.dataset.test_fraction == 0.2
    t = m.training
    assert (t.micro_batches, t.loss, t.shuffle, t.seed, t.schedule) == (
        1, "cross_entropy", True, 0, "pipelined",
    )  # fmt: skip
    assert (t.optimizer.type, t.optimizer.momentum, t.optimizer.weight_decay) == ("sgd", 0.0, 0.0)
    assert m.network.port == 5000 and m.network.subnet is None
    assert m.nodes[0].board is None and m.nodes[0].w5500 is None


def test_inline_model_gives_its_ir() -> None:
    ir = load_manifest(VALID / "design-example.yaml").model.ir()
    assert ir.input_shape == (1, 8, 8)
    assert ir.layers[0].kind is LayerKind.CONV2D and ir.output_shape == (10,)


def test_paths_are_resolved_against_the_manifest(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "net.py").write_text("def build():\n    pass\n")
    (tmp_path / "w.pt").write_bytes(b"")
    text = (VALID / "minimal.yaml").read_text()
    start, end = text.index("    layers:"), text.index("  dataset:")
    text = text[:start] + "    source: {file: models/net.py}\n    weights: w.pt\n" + text[end:]
    (tmp_path / "m.yaml").write_text(text)
    # The typed view only (the stub factory and empty weights would not pass the content checks).
    m = build_manifest(load_yaml(tmp_path / "m.yaml"))
    assert m.model.source is not None
    assert m.model.source.file == tmp_path.resolve() / "models" / "net.py"
    assert m.model.source.factory == "build"
    assert m.model.weights == tmp_path.resolve() / "w.pt"
    with pytest.raises(ModelError):
        m.model.ir()  # a factory model's IR needs torch, elsewhere


def test_locations_are_kept_for_later_messages() -> None:
    lines = (VALID / "design-example.yaml").read_text().splitlines()
    mac_line = next(i for i, t in enumerate(lines, 1) if '"02:4e:4d:00:00:02"' in t)
    stage_line = next(i for i, t in enumerate(lines, 1) if "{node: h7a3" in t)
    m = load_manifest(VALID / "design-example.yaml")
    loc = m.locate("spec.nodes[1].w5500.mac")
    assert (loc.line, loc.path) == (mac_line, "spec.nodes[1].w5500.mac")
    assert m.locate(("spec", "stages", 1)).line == stage_line


def test_invalid_manifest_raises_with_every_problem() -> None:
    with pytest.raises(ManifestInvalid) as info:
        load_manifest(INVALID / "duplicate-node-name.yaml")
    assert len(info.value.problems) == 2
    assert info.value.exit_code == 1


def test_missing_file_raises_manifest_invalid(tmp_path: Path) -> None:
    with pytest.raises(ManifestInvalid) as info:
        load_manifest(tmp_path / "nope.yaml")
    assert info.value.problems[0].message == "no such file"
