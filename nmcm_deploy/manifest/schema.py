"""JSON Schema validation of a loaded manifest, with every error located and said plainly.

The schema (``schemas/cluster.schema.json``; a copy ships in the wheel as
``nmcm_deploy/data/cluster.schema.json``) is the contract editors also use. jsonschema finds the
errors; this module turns each into a Problem at the YAML node it is about, with a message a user
can act on — in particular "quote it" where YAML 1.1 turned text into a number or a boolean.
"""

from __future__ import annotations

import difflib
import functools
import json
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from nmcm_deploy.errors import Problem
from nmcm_deploy.manifest.loader import LoadedYaml, LocationMap, NodeInfo, Segment, describe_value

SCHEMA_NAME = "cluster.schema.json"

# What a value matching each pattern of the schema looks like (keyed by the pattern itself; a test
# checks every pattern in the schema has an entry).
PATTERN_MESSAGES = {
    "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$": (
        "must be a DNS label: lower-case letters, digits and '-', starting and ending with a "
        "letter or digit, at most 63 characters"
    ),
    "^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$": 'must be a MAC address like "02:4e:4d:00:00:01"',
    "^P[A-K]([0-9]|1[0-5])$": "must be a pin name like PD14 (port A-K, pin 0-15)",
    "^spi[1-6]$": "must be an SPI peripheral: spi1 .. spi6",
    "^[A-Za-z_][A-Za-z0-9_]*$": "must be a Python identifier (the factory function's name)",
}
_CIDR_MESSAGE = "must be an IPv4 subnet in CIDR form, like 192.168.50.0/24"

_TYPE_WORDS = {
    "object": "a mapping",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "null": "nothing",
}

# One finding before it gets a location: the path, the message, and whether to point at the key.
_Finding = tuple[tuple[Segment, ...], str, bool]


@functools.cache
def load_schema() -> dict[str, Any]:
    """The manifest's JSON Schema as data."""
    packaged = resources.files("nmcm_deploy").joinpath("data").joinpath(SCHEMA_NAME)
    if packaged.is_file():
        text = packaged.read_text(encoding="utf-8")
    else:
        text = (Path(__file__).resolve().parents[2] / "schemas" / SCHEMA_NAME).read_text(
            encoding="utf-8"
        )
    schema: dict[str, Any] = json.loads(text)
    return schema


@functools.cache
def _validator() -> Draft202012Validator:
    # Without a format checker, jsonschema treats `format: ipv4` as a mere annotation.
    return Draft202012Validator(load_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_problems(doc: LoadedYaml) -> list[Problem]:
    """Every schema violation of ``doc.data``, each located at its YAML node."""
    if doc.data is None:
        return []
    explainer = _Explainer(doc.locations, load_schema())
    seen: set[tuple[str, str]] = set()
    problems: list[Problem] = []
    for error in _validator().iter_errors(doc.data):
        for segments, message, at_key in explainer.explain(error):
            location = doc.locations.locate(segments, at_key=at_key)
            if (location.path, message) in seen:
                continue
            seen.add((location.path, message))
            problems.append(Problem(location, message))
    return problems


def _q(value: object) -> str:
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _did_you_mean(word: object, options: Sequence[str]) -> str:
    if not isinstance(word, str):
        return ""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {_q(close[0])}?" if close else ""


class _Explainer:
    def __init__(self, locations: LocationMap, root: dict[str, Any]) -> None:
        self.locations = locations
        self.root = root

    def resolve(self, schema: Any) -> dict[str, Any]:
        """Follow local ``$ref``s (the schema only uses ``#/definitions/...``)."""
        while isinstance(schema, dict) and "$ref" in schema:
            target: Any = self.root
            for part in str(schema["$ref"]).removeprefix("#/").split("/"):
                target = target[part]
            schema = target
        return schema if isinstance(schema, dict) else {}

    def info(self, segments: Sequence[Segment]) -> NodeInfo | None:
        return self.locations.info(segments)

    def quote_hint(self, segments: Sequence[Segment], value: object) -> str:
        """Why a value that should have been text is not, when YAML typed an unquoted scalar."""
        info = self.info(segments)
        if info is None or info.raw is None or info.quoted or isinstance(value, str):
            return ""
        raw = info.raw
        if isinstance(value, bool):
            return f'; YAML 1.1 reads {raw} as the boolean {str(value).lower()}: quote it: "{raw}"'
        if isinstance(value, (int, float)) and ":" in raw:
            return f'; YAML 1.1 reads {raw} as a base-60 number: quote it: "{raw}"'
        if isinstance(value, (int, float)):
            return f'; YAML reads {raw} as a number: quote it: "{raw}"'
        return ""

    def explain(self, error: ValidationError) -> Iterator[_Finding]:
        kind = error.validator
        segments = tuple(error.absolute_path)
        value = error.instance
        schema = error.schema if isinstance(error.schema, dict) else {}
        expected: Any = error.validator_value  # the keyword's value in the schema
        if kind in ("oneOf", "anyOf"):
            yield from self.alternatives(error)
        elif kind == "required" and isinstance(value, dict):
            where = "" if segments else " top-level"  # the root has no path to show
            for name in expected:
                if name not in value:
                    yield segments, f"missing required{where} field {_q(name)}", True
        elif kind == "additionalProperties" and isinstance(value, dict):
            allowed = list(schema.get("properties", {}))
            for key in value:
                if key not in allowed:
                    yield (*segments, key), self.unknown_field(key, schema, allowed), True
        elif kind == "type":
            yield segments, self.type_message(segments, value, expected), False
        elif kind == "enum":
            options = [str(o) for o in expected]
            message = f"must be one of: {', '.join(options)}; got {describe_value(value)}"
            message += self.quote_hint(segments, value) or _did_you_mean(value, options)
            yield segments, message, False
        elif kind == "const":
            message = f"must be {_q(expected)}, got {describe_value(value)}"
            yield segments, message + self.quote_hint(segments, value), False
        elif kind == "pattern":
            pattern = str(expected)
            text = PATTERN_MESSAGES.get(pattern, _CIDR_MESSAGE if "/" in pattern else "")
            text = text or f"must match {pattern}"
            yield segments, f"{text}; got {_q(value)}", False
        elif kind == "format":
            what = "an IPv4 address" if expected == "ipv4" else expected
            yield segments, f"{_q(value)} is not {what}", False
        elif kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            op = {
                "minimum": ">=",
                "maximum": "<=",
                "exclusiveMinimum": ">",
                "exclusiveMaximum": "<",
            }
            yield segments, f"must be {op[kind]} {expected}, got {value}", False
        elif kind in ("minItems", "maxItems") and isinstance(value, list):
            yield segments, self.count_message(value, schema), False
        elif kind == "minLength":
            yield segments, "must not be empty", False
        else:
            yield segments, error.message, False

    def unknown_field(self, key: str, schema: dict[str, Any], allowed: list[str]) -> str:
        layer = schema.get("properties", {}).get("type", {}).get("const")
        options = [a for a in allowed if a != "type"]
        if layer is not None and not options:
            return f"unknown field {_q(key)}: a {layer} layer takes no options"
        where = f"for a {layer} layer" if layer is not None else "here"
        listed = ", ".join(options if layer is not None else allowed)
        return f"unknown field {_q(key)}{_did_you_mean(key, allowed)} (allowed {where}: {listed})"

    def type_message(self, segments: Sequence[Segment], value: object, expected: object) -> str:
        types = expected if isinstance(expected, list) else [expected]
        words = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in types)
        message = f"expected {words}, got {describe_value(value)}"
        if "string" in types:
            return message + self.quote_hint(segments, value)
        info = self.info(segments)
        if isinstance(value, str) and info is not None and info.quoted:
            if {"integer", "number"} & set(types) and _is_number(value):
                return message + "; remove the quotes"
            if "boolean" in types and value.lower() in ("true", "false"):
                return message + "; remove the quotes"
        if "boolean" in types and isinstance(value, (str, int)):
            return message + "; write true or false"
        return message

    def count_message(self, value: list[Any], schema: dict[str, Any]) -> str:
        low, high = schema.get("minItems"), schema.get("maxItems")
        if low is not None and low == high:
            text = f"must have exactly {low} item{'s' if low != 1 else ''}, got {len(value)}"
        elif low is not None and len(value) < low:
            text = f"must have at least {low} item{'s' if low != 1 else ''}, got {len(value)}"
        else:
            text = f"must have at most {high} items, got {len(value)}"
        description = schema.get("description")
        if isinstance(description, str) and description.startswith("["):
            text += f" ({description.split(':')[0]})"
        return text

    def alternatives(self, error: ValidationError) -> Iterator[_Finding]:
        """A oneOf/anyOf failed: report the errors of the alternative the user meant, when that
        is clear, else one message naming the alternatives."""
        segments = tuple(error.absolute_path)
        value = error.instance
        alternatives: Any = error.validator_value
        branches = [self.resolve(b) for b in alternatives]
        names = [_summary(b) for b in branches]
        required_only = all(set(b) <= {"required", "description"} for b in branches)
        if not error.context:  # more than one alternative matched
            yield segments, f"give only one of: {' or '.join(names)}", required_only
            return
        by_branch: dict[int, list[ValidationError]] = {}
        for sub in error.context:
            by_branch.setdefault(int(sub.relative_schema_path[0]), []).append(sub)

        discriminator = _discriminator(branches)
        if discriminator is not None and isinstance(value, dict):
            prop, consts = discriminator
            title = str(error.schema.get("title", "")) if isinstance(error.schema, dict) else ""
            what = f"{title} {prop}".strip()
            if prop not in value:
                yield segments, f"missing {_q(prop)}: the {what}, one of: {', '.join(consts)}", True
            elif value[prop] in consts:
                for sub in by_branch.get(consts.index(value[prop]), []):
                    yield from self.explain(sub)
            else:
                got = value[prop]
                message = f"unsupported {what} {_q(got)}; supported: {', '.join(consts)}"
                message += _did_you_mean(got, consts) or self.quote_hint((*segments, prop), got)
                yield (*segments, prop), message, False
            return

        if required_only:
            yield segments, f"needs one of: {' or '.join(names)}", True
            return
        relevant = [i for i in range(len(branches)) if not _mismatched(by_branch.get(i, []))]
        if len(relevant) > 1:
            # Prefer the alternative whose only complaints are about what is inside the value
            # (input: [1, 0, 8] is a [C, H, W] with a bad H, not a [features] of wrong length).
            inside = [i for i in relevant if all(e.relative_path for e in by_branch.get(i, []))]
            relevant = inside or relevant
        if len(relevant) == 1:
            for sub in by_branch.get(relevant[0], []):
                yield from self.explain(sub)
            return
        message = f"must be {' or '.join(names)}; got {describe_value(value)}"
        yield segments, message + self.quote_hint(segments, value), False


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _summary(branch: dict[str, Any]) -> str:
    if isinstance(branch.get("description"), str):
        return str(branch["description"])
    if "const" in branch:
        return _q(branch["const"])
    return _TYPE_WORDS.get(str(branch.get("type")), "something else")


def _discriminator(branches: list[dict[str, Any]]) -> tuple[str, list[str]] | None:
    """The property whose ``const`` tells the alternatives apart (a layer's ``type``), if any."""
    if not branches:
        return None
    for prop, spec in branches[0].get("properties", {}).items():
        if not isinstance(spec, dict) or "const" not in spec:
            continue
        consts = [b.get("properties", {}).get(prop, {}).get("const") for b in branches]
        if all(isinstance(c, str) for c in consts):
            return prop, [str(c) for c in consts]
    return None


def _mismatched(errors: list[ValidationError]) -> bool:
    """An alternative of the wrong type or constant altogether: not what the user meant."""
    return any(e.validator in ("type", "const") and not e.relative_path for e in errors)
