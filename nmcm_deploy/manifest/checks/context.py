"""What every semantic check works with: the loaded document, read defensively, and the problems
found so far.

The helpers return None (or an empty container) for a value that is not of the type a check
expects, so a check never raises on malformed data; ``Context.clean`` tells whether a part of the
document already has a problem, so a check can skip it and one mistake is not reported twice.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from nmcm_deploy.errors import Problem
from nmcm_deploy.manifest.loader import LoadedYaml, Segment, format_path

Where = tuple[Segment, ...]


@dataclass
class Context:
    """The document being checked, the paths that already have a problem, and the problems
    found so far."""

    doc: LoadedYaml
    dirty: set[str]
    problems: list[Problem] = field(default_factory=list)

    @property
    def spec(self) -> dict[str, Any]:
        return as_dict(as_dict(self.doc.data).get("spec"))

    def get(self, *segments: Segment) -> Any:
        value: Any = self.doc.data
        for seg in segments:
            if isinstance(seg, int) and isinstance(value, list) and 0 <= seg < len(value):
                value = value[seg]
            elif isinstance(seg, str) and isinstance(value, dict):
                value = value.get(seg)
            else:
                return None
        return value

    def clean(self, *segments: Segment) -> bool:
        """No problem was reported at or below ``segments``."""
        prefix = format_path(segments)
        if not prefix:
            return not self.dirty
        return not any(
            p == prefix or p.startswith((prefix + ".", prefix + "[")) for p in self.dirty
        )

    def line(self, *segments: Segment) -> int:
        return self.doc.locations.line_of(segments)

    def add(self, segments: Sequence[Segment], message: str, *, at_key: bool = False) -> None:
        location = self.doc.locations.locate(tuple(segments), at_key=at_key)
        self.problems.append(Problem(location, message))
        self.dirty.add(location.path)

    def nodes(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for i, node in enumerate(as_list(self.spec.get("nodes"))):
            if isinstance(node, dict):
                yield i, node


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def as_number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def as_ip(value: Any) -> ipaddress.IPv4Address | None:
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        return None


def layer_span(first: int, last: int) -> str:
    return f"layer {first}" if first == last else f"layers {first}..{last}"


def did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
