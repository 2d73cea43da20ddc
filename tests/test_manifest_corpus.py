"""Every wrong manifest of the corpus gets the problems its first lines expect, at the right line;
every valid manifest (ours and the project's examples) gets none."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from nmcm_deploy.errors import Problem
from nmcm_deploy.manifest import validate_file

ROOT = Path(__file__).resolve().parents[1]
CORPUS = Path(__file__).parent / "manifests"
INVALID = sorted((CORPUS / "invalid").glob("*.yaml"))
VALID = sorted((CORPUS / "valid").glob("*.yaml")) + sorted((ROOT / "manifests").rglob("*.yaml"))
EXPECT = re.compile(r"^# expect: (\d+): (.+)$")


def expectations(path: Path) -> list[tuple[int, str]]:
    """The ``# expect: LINE: TEXT`` comments at the top of a corpus file."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = EXPECT.match(line)
        if match is None:
            break
        found.append((int(match.group(1)), match.group(2)))
    return found


def rendered(problem: Problem) -> str:
    """A problem as the CLI prints it after ``FILE:LINE:COL: ``."""
    path = problem.location.path
    return f"{path}: {problem.message}" if path else problem.message


def test_corpus_is_big_enough() -> None:
    assert len(INVALID) >= 35
    assert all(expectations(p) for p in INVALID), "every corpus file starts with # expect:"


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_reports_expected_problems(path: Path) -> None:
    problems = validate_file(path)
    shown = "\n".join(str(p) for p in problems)
    for line, text in expectations(path):
        assert any(p.location.line == line and text in rendered(p) for p in problems), (
            f"expected at line {line}: {text!r}\ngot:\n{shown}"
        )
    for p in problems:
        assert p.location.file == str(path)


@pytest.mark.parametrize("path", VALID, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_valid_manifest_has_no_problems(path: Path) -> None:
    assert [str(p) for p in validate_file(path)] == []
