"""YAML to plain data, with the line and column of every node, and problems instead of exceptions.

PyYAML composes the document into nodes that carry marks; we build the data from those nodes
ourselves (rather than ``yaml.safe_load``) so that every value keeps its position, duplicate keys
are reported (PyYAML silently keeps the last one), and anything odd in the file becomes a located
Problem: nothing a user can put in the file raises.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from nmcm_deploy.errors import Location, Problem

MAX_BYTES = 1 << 20  # a manifest is a few KB; anything near 1 MiB is not one
MAX_NODES = 100_000  # YAML nodes after alias expansion ("billion laughs" guard)
MAX_DEPTH = 64

Segment = str | int
_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_TAG_PREFIX = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG_PREFIX + t for t in ("str", "int", "float", "bool", "null")}


def format_path(segments: Iterable[Segment]) -> str:
    """``("spec", "nodes", 1, "w5500", "mac")`` -> ``spec.nodes[1].w5500.mac``; root is ``""``."""
    out = ""
    for seg in segments:
        if isinstance(seg, int):
            out += f"[{seg}]"
        elif _PLAIN_KEY.match(seg):
            out += f".{seg}" if out else seg
        else:
            out += f"[{json.dumps(seg)}]"
    return out


_SEGMENT = re.compile(r'\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]|\.?([A-Za-z_][A-Za-z0-9_-]*)')


def parse_path(path: str) -> tuple[Segment, ...]:
    """The inverse of format_path: ``spec.nodes[1].mac`` -> ``("spec", "nodes", 1, "mac")``."""
    segments: list[Segment] = []
    pos = 0
    while pos < len(path):
        m = _SEGMENT.match(path, pos)
        if m is None:
            raise ValueError(f"not a manifest path: {path!r}")
        index, quoted, name = m.groups()
        segments.append(int(index) if index is not None else json.loads(quoted) if quoted else name)
        pos = m.end()
    return tuple(segments)


def resolve_path(base_dir: Path, text: str) -> Path:
    """A path from a manifest: ``~`` expanded; a relative one is taken from the manifest's
    directory."""
    path = Path(text).expanduser()
    return path if path.is_absolute() else base_dir / path


@dataclass(frozen=True)
class NodeInfo:
    """Where a value is in the file (1-based), where its key is, and how a scalar was written."""

    line: int
    column: int
    key_line: int = 0  # 0: the value is a list item or the document root
    key_column: int = 0
    raw: str | None = None  # the scalar's source text, before YAML typed it
    quoted: bool = False


@dataclass
class LocationMap:
    """JSON path -> NodeInfo for every node of one manifest."""

    file: str
    nodes: dict[str, NodeInfo] = field(default_factory=dict)

    def info(self, segments: Sequence[Segment]) -> NodeInfo | None:
        return self.nodes.get(format_path(segments))

    def locate(self, segments: Sequence[Segment], *, at_key: bool = False) -> Location:
        """Location of the node at ``segments``, or of its nearest ancestor that exists.

        ``at_key``: point at the key of a mapping entry rather than its value (for "unknown
        field", "missing field", or a value left empty)."""
        path = format_path(segments)
        for depth in range(len(segments), -1, -1):
            info = self.nodes.get(format_path(segments[:depth]))
            if info is None:
                continue
            if (at_key or depth < len(segments)) and info.key_line:
                return Location(self.file, info.key_line, info.key_column, path)
            return Location(self.file, info.line, info.column, path)
        return Location(self.file, 1, 1, path)

    def line_of(self, segments: Sequence[Segment]) -> int:
        return self.locate(segments).line


@dataclass
class LoadedYaml:
    """The result of loading: ``data`` is None when there is no usable document."""

    file: str
    data: Any
    locations: LocationMap
    problems: list[Problem]


class _Fatal(Exception):
    """Building the data cannot go on: too many nodes, or an alias that contains itself."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def load_yaml(path: str | Path) -> LoadedYaml:
    """Read and parse one manifest file; every failure is a Problem, never an exception."""
    file = str(path)
    locations = LocationMap(file)

    def fail(message: str, line: int = 0, column: int = 0) -> LoadedYaml:
        return LoadedYaml(file, None, locations, [Problem(Location(file, line, column), message)])

    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return fail("no such file")
    except IsADirectoryError:
        return fail("is a directory, not a manifest file")
    except PermissionError:
        return fail("permission denied")
    except OSError as exc:
        return fail(f"cannot read: {exc.strerror or exc}")
    if len(raw) > MAX_BYTES:
        return fail(f"file is larger than {MAX_BYTES // 1024} KiB: not a manifest")
    text, problem = _decode(raw)
    if text is None:
        return fail(*problem)
    return parse_yaml(text, file)


def _decode(raw: bytes) -> tuple[str | None, tuple[str, int, int]]:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16"), ("", 0, 0)
        except UnicodeDecodeError:
            return None, ("not valid UTF-16 text", 0, 0)
    if b"\x00" in raw:
        return None, ("binary file (contains NUL bytes), not a YAML manifest", 0, 0)
    try:
        return raw.decode("utf-8-sig"), ("", 0, 0)
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        bad = raw[exc.start]
        return None, (f"not UTF-8 text (byte 0x{bad:02x}); a manifest is UTF-8 YAML", line, column)


def parse_yaml(text: str, file: str = "<string>") -> LoadedYaml:
    """Parse manifest text; ``file`` is only used in locations."""
    locations = LocationMap(file)
    problems: list[Problem] = []

    def fail(message: str, line: int = 0, column: int = 0) -> LoadedYaml:
        problems.append(Problem(Location(file, line, column), message))
        return LoadedYaml(file, None, locations, problems)

    try:
        loader, root = _compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        return fail(_syntax_message(exc), line, column)
    except yaml.reader.ReaderError as exc:
        line, column = _line_col(text, exc.position)
        return fail(
            f"character #x{exc.character:04x} is not allowed in YAML"
            if isinstance(exc.character, int)
            else f"cannot read the file: {exc.reason}",
            line,
            column,
        )
    except RecursionError:
        return fail("the YAML is nested too deeply")
    except yaml.YAMLError as exc:
        return fail(f"YAML error: {exc}")

    if root is None:
        return fail(
            "the file is empty; a manifest is a mapping with apiVersion, kind, metadata and spec",
            1,
            1,
        )
    builder = _Builder(loader, file, locations, problems)
    try:
        data = builder.build(root, (), None)
    except _Fatal as exc:
        problems.clear()  # what was found before is noise next to this
        return fail(exc.message, exc.line, exc.column)
    if not isinstance(data, dict):
        line, column = root.start_mark.line + 1, root.start_mark.column + 1
        return fail(
            "the top level must be a mapping with apiVersion, kind, metadata and spec, "
            f"not {describe_value(data)}",
            line,
            column,
        )
    return LoadedYaml(file, data, locations, problems)


def _compose(text: str) -> tuple[yaml.SafeLoader, yaml.Node | None]:
    """The document's node tree, parsed by libyaml where PyYAML was built with it.

    libyaml parses several times faster than the pure-Python parser and gives the same
    nodes and marks; a text it refuses is parsed again by the pure-Python parser, whose
    error messages (with the tab hint below) are the ones users see.
    """
    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:
        try:
            loader = fast(text)
            return loader, loader.get_single_node()
        except yaml.YAMLError:
            pass
    loader = yaml.SafeLoader(text)
    return loader, loader.get_single_node()


def _syntax_message(exc: yaml.MarkedYAMLError) -> str:
    problem = exc.problem or "invalid YAML"
    message = "YAML syntax error: "
    if exc.context:
        where = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
        message += f"{exc.context}{where}: "
    message += problem
    if "'\\t'" in problem:
        message += "; indent with spaces, not tabs"
    return message


def _line_col(text: str, position: int) -> tuple[int, int]:
    before = text[:position]
    return before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1


def describe_value(value: object) -> str:
    """How a value reads in a message: "a list", "the integer 3", "nothing (an empty value)"."""
    if value is None:
        return "nothing (an empty value)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"the integer {value}"
    if isinstance(value, float):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {json.dumps(value)}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}"
    return f"a {type(value).__name__} ({value})"


class _Builder:
    """Turns composed nodes into data, recording a NodeInfo per path."""

    def __init__(
        self, loader: yaml.SafeLoader, file: str, locations: LocationMap, problems: list[Problem]
    ) -> None:
        self.loader = loader
        self.file = file
        self.locations = locations
        self.problems = problems
        self.count = 0
        self.active: set[int] = set()  # nodes being built: a node seen again is a recursive alias

    def problem(self, node: yaml.Node, segments: Sequence[Segment], message: str) -> None:
        loc = Location(
            self.file, node.start_mark.line + 1, node.start_mark.column + 1, format_path(segments)
        )
        self.problems.append(Problem(loc, message))

    def record(self, node: yaml.Node, segments: tuple[Segment, ...], key: yaml.Node | None) -> None:
        raw = node.value if isinstance(node, yaml.ScalarNode) else None
        quoted = isinstance(node, yaml.ScalarNode) and node.style in ("'", '"')
        key_line = key.start_mark.line + 1 if key is not None else 0
        key_column = key.start_mark.column + 1 if key is not None else 0
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if raw == "" and not quoted and key is not None:
            # An empty value has no text of its own; its mark is wherever the next token is.
            line, column = key_line, key_column
        self.locations.nodes[format_path(segments)] = NodeInfo(
            line, column, key_line, key_column, raw, quoted
        )

    def build(self, node: yaml.Node, segments: tuple[Segment, ...], key: yaml.Node | None) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _Fatal(
                f"more than {MAX_NODES} YAML nodes after expanding aliases: not a manifest"
            )
        if len(segments) > MAX_DEPTH:
            self.problem(node, segments, f"nested more than {MAX_DEPTH} levels deep")
            return None
        if id(node) in self.active:
            mark = node.start_mark
            raise _Fatal(
                "a YAML alias refers to a node that contains it", mark.line + 1, mark.column + 1
            )
        self.record(node, segments, key)
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, segments)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                self.check_tag(node, segments, _TAG_PREFIX + "seq")
                return [self.build(item, (*segments, i), None) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            self.check_tag(node, segments, _TAG_PREFIX + "map")
            return self.mapping(node, segments)
        finally:
            self.active.discard(id(node))

    def check_tag(self, node: yaml.Node, segments: Sequence[Segment], expected: str) -> None:
        if node.tag != expected:
            self.problem(node, segments, f"unsupported YAML tag {node.tag!r}")

    def scalar(self, node: yaml.ScalarNode, segments: Sequence[Segment]) -> Any:
        if node.tag not in _SCALAR_TAGS:
            # No manifest field takes a date: keep its text (what the user meant). Binary and
            # custom tags are errors.
            if node.tag == _TAG_PREFIX + "timestamp":
                return node.value
            self.problem(node, segments, f"unsupported YAML tag {node.tag!r}")
            return node.value
        try:
            value = self.loader.construct_object(node)
        except yaml.YAMLError as exc:
            self.problem(node, segments, f"cannot read this value: {exc}")
            return None
        if isinstance(value, float) and not math.isfinite(value):
            self.problem(node, segments, f"{node.value} is not a finite number")
        return value

    def mapping(self, node: yaml.MappingNode, segments: tuple[Segment, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        first_seen: dict[str, yaml.Node] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _TAG_PREFIX + "merge":
                merges.append(value_node)
                continue
            key = self.key(key_node, segments)
            if key is None:
                continue
            if key in first_seen:
                first = first_seen[key].start_mark.line + 1
                self.problem(
                    key_node,
                    (*segments, key),
                    f"duplicate key {key!r} (first at line {first}); YAML keys must be unique",
                )
                continue
            first_seen[key] = key_node
            out[key] = self.build(value_node, (*segments, key), key_node)
        # "<<: *defaults" merges: explicit keys win, then earlier merged mappings win.
        for merge in merges:
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    self.problem(merge, segments, "a '<<' merge needs a mapping or a list of them")
                    continue
                for key_node, value_node in source.value:
                    key = self.key(key_node, segments)
                    if key is not None and key not in out:
                        out[key] = self.build(value_node, (*segments, key), key_node)
        return out

    def key(self, node: yaml.Node, segments: Sequence[Segment]) -> str | None:
        if isinstance(node, yaml.ScalarNode) and node.tag == _TAG_PREFIX + "str":
            return str(node.value)
        if isinstance(node, yaml.ScalarNode):
            value = self.scalar(node, segments)
            hint = ""
            if isinstance(value, bool):
                hint = f"; YAML 1.1 reads {node.value} as the boolean {str(value).lower()}"
            self.problem(
                node,
                (*segments, node.value),
                f'key {node.value!r} must be a string{hint}; quote it: "{node.value}"',
            )
            return None
        self.problem(node, segments, "a key must be a plain string, not a list or a mapping")
        return None
