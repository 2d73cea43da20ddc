"""The manifest's JSON Schema: valid for draft 2020-12 and draft-07 editors, complete, and in step
with the typed model's defaults; and its errors turned into readable, located messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft7Validator, Draft202012Validator

from nmcm_deploy.manifest import model as typed
from nmcm_deploy.manifest.loader import parse_yaml
from nmcm_deploy.manifest.schema import PATTERN_MESSAGES, load_schema, schema_problems

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "schemas" / "cluster.schema.json"
MINIMAL = (Path(__file__).parent / "manifests" / "valid" / "minimal.yaml").read_text()

# Keywords both draft-07 and draft 2020-12 understand the same way.
PORTABLE = {
    "$schema", "$id", "$ref", "title", "description", "default", "type", "properties",
    "required", "additionalProperties", "enum", "const", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "minLength", "items",
    "oneOf", "anyOf", "format", "definitions",
}  # fmt: skip


def subschemas(schema: Any, where: str = "#") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema object inside ``schema`` (not the property-name maps)."""
    if not isinstance(schema, dict):
        return
    yield where, schema
    for key in ("properties", "definitions"):
        for name, sub in schema.get(key, {}).items():
            yield from subschemas(sub, f"{where}/{key}/{name}")
    for key in ("items", "additionalProperties"):
        yield from subschemas(schema.get(key), f"{where}/{key}")
    for key in ("oneOf", "anyOf"):
        for i, sub in enumerate(schema.get(key, [])):
            yield from subschemas(sub, f"{where}/{key}/{i}")


def test_schema_is_valid_for_both_drafts() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    Draft7Validator.check_schema({**schema, "$schema": "http://json-schema.org/draft-07/schema#"})


def test_schema_uses_only_portable_keywords() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    for where, sub in subschemas(schema):
        assert set(sub) <= PORTABLE, (where, set(sub) - PORTABLE)
        assert not isinstance(sub.get("items"), list), f"{where}: array-form items"
        if "$ref" in sub:
            name = sub["$ref"].removeprefix("#/definitions/")
            assert sub["$ref"].startswith("#/definitions/") and name in schema["definitions"]


def test_every_object_is_strict_and_every_property_described() -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    for where, sub in subschemas(schema):
        if sub.get("type") == "object" and where != "#/properties/metadata/properties/labels":
            assert sub.get("additionalProperties") is False, where
        for name, prop in sub.get("properties", {}).items():
            target = prop
            if "$ref" in prop:  # a bare reference takes the definition's description
                target = schema["definitions"][prop["$ref"].removeprefix("#/definitions/")]
            assert prop.get("description") or target.get("description"), f"{where}/{name}"


def test_every_pattern_has_a_message() -> None:
    patterns = {sub["pattern"] for _, sub in subschemas(load_schema()) if "pattern" in sub}
    cidr = {p for p in patterns if "/" in p}
    assert len(cidr) == 1
    assert patterns - cidr <= set(PATTERN_MESSAGES)


def test_loaded_schema_is_the_repository_schema() -> None:
    assert load_schema() == json.loads(SCHEMA_FILE.read_text())


def test_wheel_ships_the_schema_and_profiles(tmp_path: Path) -> None:
    """Build the wheel as a user's pip would, unpack it away from the repository and validate a
    manifest with it: the schema and the profiles must come from inside the package."""
    root = SCHEMA_FILE.parents[1]
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            str(root),
            "-w",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("nmcm_deploy-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    packaged = site / "nmcm_deploy" / "data" / "cluster.schema.json"
    assert packaged.read_bytes() == SCHEMA_FILE.read_bytes()
    assert (site / "nmcm_deploy" / "profiles" / "mcus" / "stm32f413zh.yaml").is_file()
    manifest = root / "manifests" / "quickstart.yaml"
    check = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, nmcm_deploy.manifest as m; "
            "print(m.__file__); sys.exit(len(m.validate_file(sys.argv[1])))",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert check.stdout.startswith(str(site))


def _prop(schema: dict[str, Any], *path: str) -> dict[str, Any]:
    node: Any = schema
    for part in path:
        node = node["properties"][part] if "properties" in node else node
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].removeprefix("#/definitions/")]
    return dict(node)


@pytest.mark.parametrize(
    ("path", "default"),
    [
        (("spec", "target"), typed.DEFAULT_TARGET),
        (("spec", "sim", "network"), typed.DEFAULT_SIM_NETWORK),
        (("spec", "stages"), typed.DEFAULT_STAGES),
        (("spec", "model", "seed"), typed.DEFAULT_MODEL_SEED),
        (("spec", "model", "source", "factory"), typed.DEFAULT_FACTORY),
        (("spec", "dataset", "test_fraction"), typed.DEFAULT_TEST_FRACTION),
        (("spec", "training", "micro_batches"), typed.DEFAULT_MICRO_BATCHES),
        (("spec", "training", "loss"), typed.DEFAULT_LOSS),
        (("spec", "training", "shuffle"), typed.DEFAULT_SHUFFLE),
        (("spec", "training", "seed"), typed.DEFAULT_TRAINING_SEED),
        (("spec", "training", "schedule"), typed.DEFAULT_SCHEDULE),
        (("spec", "training", "optimizer", "type"), typed.DEFAULT_OPTIMIZER),
        (("spec", "training", "optimizer", "momentum"), typed.DEFAULT_MOMENTUM),
        (("spec", "training", "optimizer", "weight_decay"), typed.DEFAULT_WEIGHT_DECAY),
        (("spec", "network", "port"), typed.DEFAULT_PORT),
    ],
    ids=lambda v: ".".join(v) if isinstance(v, tuple) else None,
)
def test_schema_defaults_match_the_typed_model(path: tuple[str, ...], default: object) -> None:
    schema = load_schema()
    node: Any = schema
    for part in path:
        while "$ref" in node:
            node = schema["definitions"][node["$ref"].removeprefix("#/definitions/")]
        node = node["properties"][part]
    assert node["default"] == default


def messages(text: str) -> list[str]:
    doc = parse_yaml(text, "m.yaml")
    assert doc.problems == []
    return [str(p) for p in schema_problems(doc)]


def test_valid_document_has_no_schema_problems() -> None:
    assert messages(MINIMAL) == []


def test_all_errors_are_reported_not_just_the_first() -> None:
    text = MINIMAL.replace("epochs: 1", "epochs: 0").replace("batch_size: 16", "batch_size: -1")
    text = text.replace("name: minimal", "name: Minimal")
    assert len(messages(text)) == 3


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("name: solo", "name: yes", 'reads yes as the boolean true: quote it: "yes"'),
        ("name: solo", "name: off", 'reads off as the boolean false: quote it: "off"'),
        ("mcu: stm32f413zh", "mcu: 1.5", 'YAML reads 1.5 as a number: quote it: "1.5"'),
        ("name: solo", "name: 1:30", 'base-60 number: quote it: "1:30"'),
        ("epochs: 1", 'epochs: "1"', "remove the quotes"),
        ("lr: 0.1", "lr: 0.1, nesterov: true", 'unknown field "nesterov"'),
        ("{type: linear, out_features: 10}", "{type: Linear, out_features: 10}",
         'unsupported layer type "Linear"; supported: linear, conv2d, relu, flatten, softmax, '
         'maxpool2d; did you mean "linear"?'),
        ("{type: linear, out_features: 10}", "{type: conv2d, out_channels: 2}",
         'missing required field "kernel_size"'),
        ("{type: linear, out_features: 10}", "{type: maxpool2d, kernel_size: [2, x]}",
         "spec.model.layers[0].kernel_size[1]: expected an integer"),
        ("{type: linear, out_features: 10}", "{type: linear, out_features: 10, stride: 2}",
         'unknown field "stride" (allowed for a linear layer: out_features, bias)'),
        ("  nodes:", "  stages: [{node: solo, layers: [0, 0]}]\n  nodes:", ""),
        ("    name: sklearn-digits", "    name: sklearn-digits\n    npz: d.npz",
         "give only one of"),
    ],
)  # fmt: skip
def test_message(old: str, new: str, expected: str) -> None:
    assert old in MINIMAL
    found = messages(MINIMAL.replace(old, new))
    if not expected:
        assert found == []
    else:
        assert any(expected in m for m in found), found
