"""What changed in a manifest, field by field, in the manifest's own terms.

`apply` records the spec it last finished with (state.json, ``spec``); `plan` compares the
manifest's spec with it and names each field that differs by its path as the user wrote it:
``spec.training.optimizer.lr 0.05 → 0.02``, ``spec.stages[0].layers [0, 3] → [0, 2]``. Mappings are
compared key by key, lists of mappings item by item (``nodes``, ``stages``, ``layers``), and any
other list as one value (a layer range, a shape).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

ABSENT = object()


@dataclass(frozen=True)
class FieldChange:
    path: str
    before: Any  # ABSENT: the field was added
    after: Any  # ABSENT: the field was removed

    @property
    def kind(self) -> str:
        if self.before is ABSENT:
            return "added"
        return "removed" if self.after is ABSENT else "changed"

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "kind": self.kind,
            "before": None if self.before is ABSENT else self.before,
            "after": None if self.after is ABSENT else self.after,
        }

    def text(self) -> str:
        if self.before is ABSENT:
            return f"{self.path}: added, {show(self.after)}"
        if self.after is ABSENT:
            return f"{self.path}: removed (was {show(self.before)})"
        return f"{self.path} {show(self.before)} → {show(self.after)}"


def show(value: Any, width: int = 60) -> str:
    text = json.dumps(value, separators=(", ", ": "), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def as_data(value: Any) -> Any:
    """The value as JSON data (what state.json can hold): YAML's dates become strings."""
    return json.loads(json.dumps(value, default=str))


def changed_fields(before: Any, after: Any, path: str = "spec") -> list[FieldChange]:
    """Every field that differs between two versions of a manifest's spec, in document order."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[FieldChange] = []
        for key in [*after, *(k for k in before if k not in after)]:
            at = f"{path}.{key}"
            if key not in before:
                changes.append(FieldChange(at, ABSENT, after[key]))
            elif key not in after:
                changes.append(FieldChange(at, before[key], ABSENT))
            else:
                changes += changed_fields(before[key], after[key], at)
        return changes
    if _records(before) and _records(after):
        changes = []
        for i in range(max(len(before), len(after))):
            at = f"{path}[{i}]"
            if i >= len(before):
                changes.append(FieldChange(at, ABSENT, after[i]))
            elif i >= len(after):
                changes.append(FieldChange(at, before[i], ABSENT))
            else:
                changes += changed_fields(before[i], after[i], at)
        return changes
    return [] if before == after else [FieldChange(path, before, after)]


def _records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
