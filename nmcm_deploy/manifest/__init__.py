"""The cluster manifest: load a YAML file, validate it (schema + semantic checks), type it.

``validate_file`` returns every problem of a manifest, located (``FILE:LINE:COL: path: message``);
``load_manifest`` returns the typed Manifest or raises ManifestInvalid carrying all of them.
Nothing here imports torch for an inline-layer manifest: validating one stays fast; a factory or
a weights file is built with torch (manifest/content.py), an npz dataset read with numpy.
"""

from __future__ import annotations

from pathlib import Path

from nmcm_deploy.errors import ManifestInvalid, Problem
from nmcm_deploy.manifest.checks import semantic_problems
from nmcm_deploy.manifest.content import content_problems
from nmcm_deploy.manifest.loader import LoadedYaml, LocationMap, load_yaml
from nmcm_deploy.manifest.model import (
    DatasetSpec,
    LayerSpec,
    Manifest,
    ModelSpec,
    NetworkSpec,
    NodeSpec,
    OptimizerSpec,
    ProbeSpec,
    SourceSpec,
    StageSpec,
    TrainingSpec,
    W5500Spec,
    build_manifest,
)
from nmcm_deploy.manifest.schema import load_schema, schema_problems

__all__ = [
    "DatasetSpec",
    "LayerSpec",
    "LocationMap",
    "Manifest",
    "ModelSpec",
    "NetworkSpec",
    "NodeSpec",
    "OptimizerSpec",
    "ProbeSpec",
    "SourceSpec",
    "StageSpec",
    "TrainingSpec",
    "W5500Spec",
    "load_manifest",
    "load_schema",
    "validate_file",
]


def _validate(path: str | Path, fit: bool = True) -> tuple[LoadedYaml, list[Problem]]:
    doc = load_yaml(path)
    if doc.data is None:
        return doc, doc.problems
    problems = doc.problems + schema_problems(doc)
    problems += semantic_problems(doc, {p.location.path for p in problems}, fit=fit)
    unique = list(dict.fromkeys(problems))  # Problem is frozen, so hashable
    unique.sort(key=lambda p: (p.location.line, p.location.column))
    if not unique:
        # The files' contents, once the manifest is sound (content.py: the same calls as apply's).
        unique = content_problems(doc, build_manifest(doc), fit=fit)
    return doc, unique


def validate_file(path: str | Path) -> list[Problem]:
    """Every problem of the manifest at ``path``, sorted by position; empty when it is valid.

    Never raises for anything about the file itself (missing, a directory, binary, not YAML, ...):
    that is a Problem too."""
    return _validate(path)[1]


def load_manifest(path: str | Path, *, fit: bool = True) -> Manifest:
    """The typed manifest at ``path``; raises ManifestInvalid with every problem found.
    ``fit=False``: its stages need not fit their MCUs (`study` models other placements)."""
    doc, problems = _validate(path, fit)
    if problems:
        raise ManifestInvalid(problems)
    return build_manifest(doc)
