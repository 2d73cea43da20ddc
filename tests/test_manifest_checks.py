"""Semantic checks that need files or more set-up than a corpus entry, the memory fit check, and a
fuzz: no malformed document makes validation raise."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nmcm_deploy import profiles
from nmcm_deploy.compiler.blob import write_blob
from nmcm_deploy.compiler.blob_layout import blob_size as blob_bytes
from nmcm_deploy.compiler.fit import stage_fit
from nmcm_deploy.compiler.inline import inline_ir
from nmcm_deploy.compiler.memory import plan_stage
from nmcm_deploy.errors import Problem
from nmcm_deploy.manifest import load_manifest, validate_file
from nmcm_deploy.manifest.checks import semantic_problems
from nmcm_deploy.manifest.loader import LoadedYaml, load_yaml, parse_path, parse_yaml
from nmcm_deploy.manifest.schema import schema_problems

VALID = Path(__file__).parent / "manifests" / "valid"
MINIMAL = (VALID / "minimal.yaml").read_text()
EXAMPLE = (VALID / "design-example.yaml").read_text()


def write(tmp_path: Path, text: str, name: str = "m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str) -> list[str]:
    return [
        f"{p.location.line}: {p.location.path}: {p.message}"
        for p in validate_file(write(tmp_path, text))
    ]


# --- npz datasets ----------------------------------------------------------------------------


def npz_manifest(npz: str = "data/set.npz") -> str:
    return MINIMAL.replace("    name: sklearn-digits", f"    npz: {npz}")


def save_npz(tmp_path: Path, **arrays: Any) -> None:
    (tmp_path / "data").mkdir(exist_ok=True)
    np.savez(tmp_path / "data" / "set.npz", **arrays)


def test_npz_that_fits_the_model(tmp_path: Path) -> None:
    x = np.zeros((20, 64), np.float32)
    y = np.zeros(20, np.int64)
    save_npz(tmp_path, x_train=x, y_train=y, x_test=x[:5], y_test=y[:5])
    assert problems_of(tmp_path, npz_manifest()) == []


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"x_train": np.zeros((4, 8, 8), np.float32), "y_train": np.zeros(4, np.int64)},
         "x_train samples are shaped [8, 8] but spec.model.input is [64]"),
        ({"x_train": np.zeros((4, 64), np.float32)}, "set.npz has no y_train"),
        ({"x_train": np.zeros((4, 64), np.int32), "y_train": np.zeros(4, np.int64)},
         "x_train in set.npz must hold floats"),
        ({"x_train": np.zeros((4, 64), np.float32), "y_train": np.zeros(4, np.float32)},
         "y_train in set.npz must be a 1-D array of integer class ids"),
        ({"x_train": np.zeros((4, 64), np.float32), "y_train": np.zeros(5, np.int64)},
         "x_train has 4 samples but y_train 5"),
        ({"x_train": np.zeros((4, 64), np.float32), "y_train": np.zeros(4, np.int64),
          "x_test": np.zeros((2, 64), np.float32)},
         "set.npz has only one of x_test and y_test"),
    ],
    ids=["shape", "no-labels", "int-features", "float-labels", "count", "half-test-split"],
)  # fmt: skip
def test_npz_problems(tmp_path: Path, arrays: dict[str, Any], expected: str) -> None:
    save_npz(tmp_path, **arrays)
    found = problems_of(tmp_path, npz_manifest())
    line = npz_manifest().splitlines().index("    npz: data/set.npz") + 1
    assert any(p.startswith(f"{line}: spec.dataset.npz: ") and expected in p for p in found), found


def test_npz_that_is_not_a_zip(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "set.npz").write_bytes(b"not a zip at all")
    found = problems_of(tmp_path, npz_manifest())
    assert any("set.npz is not a readable .npz file" in p for p in found), found


def test_relative_paths_are_relative_to_the_manifest_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_npz(tmp_path, x_train=np.zeros((2, 64), np.float32), y_train=np.zeros(2, np.int64))
    path = write(tmp_path, npz_manifest())
    monkeypatch.chdir(Path(__file__).parent)
    assert validate_file(path) == []


# --- factory source files --------------------------------------------------------------------


def factory_manifest(factory: str = "build") -> str:
    start = MINIMAL.index("    layers:")
    end = MINIMAL.index("  dataset:")
    source = f"    source: {{file: net.py, factory: {factory}}}\n"
    return MINIMAL[:start] + source + MINIMAL[end:]


@pytest.mark.parametrize(
    "body",
    [
        "def build():\n    pass\n",
        "import torch\nbuild = lambda: torch.nn.Linear(64, 10)\n",
        "from models import make as build\n",
        "from models import *\n",  # could define anything: left to the export
    ],
    ids=["function", "assignment", "import-as", "star-import"],
)
def test_factory_found(tmp_path: Path, body: str) -> None:
    """The semantic checks find the factory without running it (what it builds is the content
    checks' business: tests/test_validate_content.py)."""
    (tmp_path / "net.py").write_text(body)
    doc = load_yaml(write(tmp_path, factory_manifest()))
    assert semantic_problems(doc) == []


def test_factory_file_with_a_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text("def build(:\n")
    found = problems_of(tmp_path, factory_manifest())
    assert any("spec.model.source.file: net.py:1: Python syntax error" in p for p in found), found


def test_factory_missing_is_reported_without_torch(tmp_path: Path) -> None:
    (tmp_path / "net.py").write_text("def make():\n    pass\n")
    found = problems_of(tmp_path, factory_manifest())
    assert found == [
        f"{factory_manifest().splitlines().index('    source: {file: net.py, factory: build}') + 1}"
        ": spec.model.source.factory: net.py defines no top-level 'build' (functions: make)"
    ]


# --- hardware --------------------------------------------------------------------------------


def test_design_example_on_hardware_is_valid(tmp_path: Path) -> None:
    text = EXAMPLE.replace("target: sim", "target: hardware").replace(
        "      board: nucleo-h7a3zi-q\n",
        '      board: nucleo-h7a3zi-q\n      probe: {uid: "003A"}\n',
    )
    assert problems_of(tmp_path, text) == []


def test_hardware_needs_w5500_and_board(tmp_path: Path) -> None:
    text = MINIMAL.replace(
        "  nodes:",
        "  target: hardware\n  network: {subnet: 10.0.0.0/24, coordinator: 10.0.0.2}\n  nodes:",
    )
    found = problems_of(tmp_path, text)
    assert any("target hardware needs w5500: {ip, mac} on every node" in p for p in found)
    assert any("target hardware needs the node's board" in p for p in found)


def test_hardware_needs_subnet_and_coordinator(tmp_path: Path) -> None:
    text = EXAMPLE.replace("target: sim", "target: hardware").replace(
        "    coordinator: 192.168.50.2\n", ""
    )
    assert any(
        "target hardware needs network.coordinator" in p for p in problems_of(tmp_path, text)
    )


def test_gateway_may_be_the_coordinator(tmp_path: Path) -> None:
    text = EXAMPLE.replace("coordinator: 192.168.50.2", "coordinator: 192.168.50.1")
    assert problems_of(tmp_path, text) == []


# --- memory fit ------------------------------------------------------------------------------


def test_f413_sram_overflow_names_arena_runtime_and_excess(tmp_path: Path) -> None:
    text = MINIMAL.replace("{type: linear, out_features: 10}", "{type: linear, out_features: 2000}")
    text = text.replace(
        "      - {type: linear, out_features: 2000}\n",
        "      - {type: linear, out_features: 2000}\n      - {type: linear, out_features: 10}\n",
    )
    found = problems_of(tmp_path, text)
    assert len(found) == 1, found
    # stages are "auto" but there is one node: the whole model runs there.
    assert "spec.nodes[0]: stage 0 (layers 0..1) on node 'solo' (stm32f413zh) needs" in found[0]
    reserve = profiles.mcu("stm32f413zh").runtime_sram_reserve
    assert (
        "bytes of SRAM (arena" in found[0]
        and f"+ runtime {reserve:,}) but has 327,680 in SRAM" in found[0]
    )
    assert "bytes too many" in found[0]


EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "manifests").rglob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_validate_predicts_what_export_plans(path: Path) -> None:
    """validate's fit check and the export's plan (compiler/cluster.py) give the same figures."""
    from nmcm_deploy.compiler import cluster
    from nmcm_deploy.costs import planner

    manifest = load_manifest(path)
    _, ir = cluster.build_model(manifest)
    # `stages: auto` over several nodes: the planner's stages, which validate checks through it.
    pipeline = planner.resolve(manifest, ir)
    planned = cluster.plan_cluster(manifest, ir, planner.resolve).stages
    t = manifest.training
    for index, (node, first, last) in enumerate(pipeline):
        mcu = profiles.mcu(manifest.node(node).mcu)
        fit = stage_fit(
            ir,
            first,
            last,
            mcu,
            batch_size=t.batch_size,
            micro_batches=t.micro_batches,
            momentum=t.optimizer.momentum > 0,
            schedule=t.schedule,
            stage_index=index,
            stage_count=len(pipeline),
        )
        assert (fit.sram_bytes, fit.flash_bytes) == (
            planned[index].fit.sram_bytes,
            planned[index].fit.flash_bytes,
        )


def test_blob_estimate_is_the_blob_size() -> None:
    ir = inline_ir(
        [1, 8, 8],
        [
            {"type": "conv2d", "out_channels": 3, "kernel_size": 3},
            {"type": "relu"},
            {"type": "flatten"},
            {"type": "linear", "out_features": 10, "bias": False},
        ],
    )
    for first, last, index in ((0, 1, 0), (2, 3, 1)):
        plan = plan_stage(
            ir, first, last, micro_batch=5, slots=2, momentum=True, stage_index=index, stage_count=2
        )
        weights = [np.zeros(t.shape, np.float32) for t in plan.tensors]
        layers = ir.layers[first : last + 1]
        blob = write_blob(layers, tuple(range(first, last + 1)), plan, weights, ir.model_hash())
        assert blob_bytes(plan, len(layers)) == len(blob)


# --- robustness ------------------------------------------------------------------------------

WRONG_VALUES: list[Any] = [None, "x", -1, 2.5, True, [], [1, "a"], {}, {"type": "relu"}]


def all_problems(doc: LoadedYaml) -> list[Problem]:
    found = schema_problems(doc)
    return found + semantic_problems(doc, {p.location.path for p in found})


@pytest.mark.parametrize("source", ["minimal", "design-example"])
def test_no_wrong_value_anywhere_makes_validation_raise(source: str) -> None:
    original = parse_yaml((VALID / f"{source}.yaml").read_text(), str(VALID / f"{source}.yaml"))
    assert all_problems(original) == []
    for path in original.locations.nodes:
        if not path:
            continue
        *parent_path, last = parse_path(path)
        for value in WRONG_VALUES:
            data = copy.deepcopy(original.data)
            parent: Any = data
            for seg in parent_path:
                parent = parent[seg]
            parent[last] = value
            doc = LoadedYaml(original.file, data, original.locations, [])
            all_problems(doc)  # must not raise; most of these are problems, some are not
