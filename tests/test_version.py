"""`nmcm version`: the versions nmcm speaks, its firmware sources and the tools it finds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nmcm_deploy import __version__
from nmcm_deploy.build import sources
from nmcm_deploy.build.sources import firmware_dir, source_digest
from nmcm_deploy.cli import version
from nmcm_deploy.cli.version import PACKAGES, TOOLS
from nmcm_deploy.compiler.blob_layout import FORMAT_VERSION
from nmcm_deploy.errors import BuildError
from nmcm_deploy.protocol.spec import VERSION
from tests.conftest import run_nmcm


def test_json_names_every_version_and_the_tools_on_path() -> None:
    result = run_nmcm("version", "-o", "json")
    assert result.code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["tool"] == __version__
    assert doc["manifest_api_version"] == "nmcm.dev/v1alpha1"
    assert (doc["protocol_version"], doc["blob_format_version"]) == (VERSION, FORMAT_VERSION)
    assert doc["firmware"]["digest"] == source_digest(firmware_dir())
    tools = {t["name"]: t["version"] for t in doc["tools"]}
    assert list(tools) == [name for name, _ in TOOLS]
    for name, found in tools.items():
        # Found exactly when it is on PATH; its version line names it.
        assert (found is not None) == (shutil.which(name) is not None), (name, found)
    assert "cmake version" in (tools["cmake"] or "")
    packages = {p["name"]: p["version"] for p in doc["python_packages"]}
    assert list(packages) == [name for name, _ in PACKAGES]
    assert packages["torch"] is not None


def test_tools_missing_from_path_are_said_to_be(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = run_nmcm("version", "-o", "json", env={"PATH": str(empty)})
    assert result.code == 0, result.output
    assert all(t["version"] is None for t in json.loads(result.stdout)["tools"])
    text = run_nmcm("version", env={"PATH": str(empty)})
    assert text.code == 0, text.output
    assert text.stdout.count("not found") == len(TOOLS)
    assert text.stdout.splitlines()[0] == f"nmcm {__version__}"


def test_without_firmware_sources_the_report_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed nmcm whose firmware sources are missing reports the problem, not a crash."""

    def missing() -> Path:
        raise BuildError("the firmware sources were not found")

    monkeypatch.setattr(sources, "firmware_dir", missing)
    assert version.report()["firmware"] == {
        "sources": None,
        "digest": None,
        "problem": "the firmware sources were not found",
    }
