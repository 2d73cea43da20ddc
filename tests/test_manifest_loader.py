"""The YAML loader: positions of every node, duplicate keys, and no exception for any file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nmcm_deploy.manifest import validate_file
from nmcm_deploy.manifest.loader import (
    MAX_BYTES,
    format_path,
    load_yaml,
    parse_path,
    parse_yaml,
)

MINIMAL = Path(__file__).parent / "manifests" / "valid" / "minimal.yaml"


def only_problem(path: Path | str) -> str:
    problems = validate_file(path)
    assert len(problems) == 1, [str(p) for p in problems]
    return str(problems[0])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", ":1:1: the file is empty"),
        (b"# only a comment\n", ":1:1: the file is empty"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00binary", "binary file"),
        (b"apiVersion: \xff\xfe\xfa", ":1:13: not UTF-8 text (byte 0xff)"),
        (b"- a\n- b\n", ":1:1: the top level must be a mapping"),
        (b"just a string\n", 'not the string "just a string"'),
        (b"42\n", "not the integer 42"),
        (b"a: \x07\n", ":1:4: character #x0007 is not allowed"),
        (b"a: [1, 2\n", "YAML syntax error"),
        (b"--- {a: 1}\n--- {b: 2}\n", ":2:1: YAML syntax error"),
        (b"a: &x [*x]\n", "a YAML alias refers to a node that contains it"),
        (b"[" * 5000 + b"]" * 5000, "nested too deeply"),
        (b"a: !!python/object/apply:os.system [ls]\n", "unsupported YAML tag"),
    ],
    ids=[
        "empty",
        "comment-only",
        "binary",
        "not-utf8",
        "top-level-list",
        "top-level-string",
        "top-level-int",
        "control-character",
        "unclosed-flow",
        "two-documents",
        "recursive-alias",
        "deep-nesting",
        "python-tag",
    ],
)
def test_bad_file_is_one_located_problem(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(content)
    problems = validate_file(path)
    assert problems, "a bad file is never valid"
    assert any(expected in str(p) for p in problems), [str(p) for p in problems]


def test_nonexistent_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    assert only_problem(path) == f"{path}: no such file"


def test_directory_path(tmp_path: Path) -> None:
    assert only_problem(tmp_path) == f"{tmp_path}: is a directory, not a manifest file"


def test_huge_file_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"a: " + b"x" * MAX_BYTES + b"\n")
    assert "larger than 1024 KiB" in only_problem(path)


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("a: 1\n")
    real_open = open

    # chmod 0 does not stop root (CI runs as root), so the refusal is made at open() itself.
    def refusing_open(file: object, *args: object, **kwargs: object) -> object:
        if str(file) == str(path):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr("builtins.open", refusing_open)
    assert only_problem(path).endswith("permission denied")


def test_billion_laughs_is_bounded(tmp_path: Path) -> None:
    rows = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefg"):
        prev = "abcdefg"[i]
        rows.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    path = tmp_path / "laughs.yaml"
    path.write_text("\n".join(rows) + "\n")
    assert "YAML nodes after expanding aliases" in only_problem(path)


def test_utf8_bom_and_utf16_are_read(tmp_path: Path) -> None:
    text = MINIMAL.read_text(encoding="utf-8")
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode())
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_bytes(text.encode("utf-16"))
    assert validate_file(bom) == []
    assert validate_file(utf16) == []


def test_every_node_has_its_line_and_column() -> None:
    doc = parse_yaml("a: 1\nb:\n  - {c: x}\n  - d\nempty:\n", "f.yaml")
    assert doc.problems == []
    info = doc.locations.nodes
    assert (info["a"].line, info["a"].column, info["a"].key_line) == (1, 4, 1)
    assert (info["b[0].c"].line, info["b[0].c"].column) == (3, 9)
    assert (info["b[1]"].line, info["b[1]"].column) == (4, 5)
    # An empty value has no text of its own: it is placed at its key.
    assert (info["empty"].line, info["empty"].column) == (5, 1)


def test_scalar_keeps_its_source_text() -> None:
    doc = parse_yaml('mac: 12:34:56:12:34:56\nq: "on"\n', "f.yaml")
    assert doc.data == {"mac": 9783981296, "q": "on"}
    assert doc.locations.nodes["mac"].raw == "12:34:56:12:34:56"
    assert not doc.locations.nodes["mac"].quoted
    assert doc.locations.nodes["q"].quoted


def test_duplicate_keys_point_at_the_second_and_name_the_first() -> None:
    doc = parse_yaml("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert doc.data == {"a": 1, "b": 2}  # the first is kept
    assert [str(p) for p in doc.problems] == [
        "f.yaml:3:1: a: duplicate key 'a' (first at line 1); YAML keys must be unique"
    ]


def test_merge_keys_are_supported_and_explicit_keys_win() -> None:
    doc = parse_yaml("base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  y: 3\n", "f.yaml")
    assert doc.problems == []
    assert doc.data["d"] == {"x": 1, "y": 3}
    assert doc.locations.nodes["d.x"].line == 1  # where the merged value is written


def test_dates_stay_text_and_non_finite_numbers_are_problems() -> None:
    doc = parse_yaml("when: 2024-01-01\nlr: .nan\n", "f.yaml")
    assert doc.data["when"] == "2024-01-01"
    assert [str(p) for p in doc.problems] == ["f.yaml:2:5: lr: .nan is not a finite number"]


def test_locate_falls_back_to_the_nearest_existing_ancestor() -> None:
    doc = parse_yaml("spec:\n  nodes:\n    - name: a\n", "f.yaml")
    loc = doc.locations.locate(("spec", "nodes", 0, "w5500", "ip"))
    assert (loc.line, loc.column, loc.path) == (3, 7, "spec.nodes[0].w5500.ip")
    assert doc.locations.locate(("spec",), at_key=True).line == 1


@pytest.mark.parametrize(
    "path", ["", "spec", "spec.nodes[1].w5500.mac", 'metadata.labels["a.b"]', "x[0][1]"]
)
def test_paths_round_trip(path: str) -> None:
    assert format_path(parse_path(path)) == path


def test_load_yaml_of_a_valid_file() -> None:
    doc = load_yaml(MINIMAL)
    assert doc.problems == []
    assert doc.data["metadata"]["name"] == "minimal"


def test_validate_does_not_import_torch_or_numpy() -> None:
    code = (
        "import sys\n"
        "from nmcm_deploy.manifest import validate_file\n"
        f"assert validate_file({str(MINIMAL)!r}) == []\n"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.stdout.strip() == "[]"
