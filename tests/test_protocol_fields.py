"""The field tables of the message payloads: they are the tables of docs/protocol.md, every message
round-trips random field values, and every fixed part of the wrong size or with an unknown
enumeration value is refused with Malformed."""

from __future__ import annotations

import dataclasses
import random
import re
import string
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nmcm_deploy.protocol import (
    MESSAGE_CLASSES,
    ErrorMessage,
    Labels,
    Malformed,
    Message,
    MessageType,
    TensorMessage,
    WeightsChunk,
)
from nmcm_deploy.protocol.fields import AsciiName, Elements, Field, Hash, Layout, Text
from nmcm_deploy.protocol.spec import FIXED_SIZE, HAS_DATA

SPEC = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
SEEDS = range(4)
CLASSES = list(MESSAGE_CLASSES.values())

# docs/protocol.md type of a fixed field, by struct format; reserved fields by their size
SPEC_TYPE = {"B": "u8", "H": "u16", "I": "u32", "Q": "u64", "f": "f32", "16s": "u8[16]"}
SPEC_TYPE |= {"64s": "char[64]", "1x": "u8", "2x": "u16", "4x": "u32"}
SPEC_ARRAY = {"<f4": "f32[", "<i4": "i32["}


def _ids(cls: type[Message]) -> str:
    return cls.TYPE.name


def _spec_tables() -> dict[MessageType, list[tuple[int, str, str]]]:
    """(offset, type, field) of each row of each "Payloads" table; "reserved" for reserved rows."""
    payloads = SPEC.read_text().split("\n## Payloads\n", 1)[1].split("\n## ", 1)[0]
    tables: dict[MessageType, list[tuple[int, str, str]]] = {}
    for section in payloads.split("\n### ")[1:]:
        heading, _, body = section.partition("\n")
        rows: list[tuple[int, str, str]] = []
        lines = iter(body.splitlines())
        for line in lines:
            if line.startswith("| offset | type | field |"):
                next(lines)  # the |---| line
                for row in lines:
                    if not row.startswith("|"):
                        break
                    offset, type_, name = (c.strip() for c in row.strip("|").split("|")[:3])
                    rows.append((int(offset), type_, name.strip("`")))
                break
        for name in re.findall(r"`([A-Z_]+)`", heading.split("(")[0]):
            tables[MessageType[name]] = rows
    return tables


def _offsets(layout: Layout) -> list[int]:
    offsets, at = [], 0
    for row in layout.rows:
        offsets.append(at)
        at += struct.calcsize("<" + row.fmt)
    return offsets


@pytest.mark.parametrize("cls", CLASSES, ids=_ids)
def test_field_tables_are_the_tables_of_the_spec(cls: type[Message]) -> None:
    table = _spec_tables().get(cls.TYPE, [])
    ours = [
        (offset, SPEC_TYPE[row.fmt], row.name if isinstance(row, Field) else "reserved")
        for offset, row in zip(_offsets(cls.FIXED), cls.FIXED.rows, strict=True)
    ]
    assert ours == table[: len(ours)]
    assert cls.FIXED.size == FIXED_SIZE[cls.TYPE]
    data_rows = table[len(ours) :]
    if cls.DATA is None:
        assert data_rows == [] and cls.TYPE not in HAS_DATA
        return
    ((offset, type_, name),) = data_rows
    prefix = "char[" if isinstance(cls.DATA, Text) else SPEC_ARRAY[cls.DATA.dtype.str]
    assert (offset, name) == (cls.FIXED.size, cls.DATA.attr) and type_.startswith(prefix)


def _random_field(field: Field, rng: random.Random) -> Any:
    if field.enum is not None:
        return rng.choice(list(field.enum))
    if isinstance(field, Hash):
        return rng.randbytes(16)
    if isinstance(field, AsciiName):
        return "".join(rng.choices(string.ascii_letters + "-.", k=rng.randint(0, 63)))
    if field.fmt == "f":
        return float(np.float32(rng.uniform(-1e6, 1e6)))  # representable exactly in f32
    return rng.randrange(1 << (8 * struct.calcsize(field.fmt)))


def _random_message(cls: type[Message], rng: random.Random) -> Message:
    values = {f.name: _random_field(f, rng) for f in cls.FIXED.fields}
    nrng = np.random.default_rng(rng.randrange(1 << 32))
    if issubclass(cls, TensorMessage):
        del values["samples"], values["features"]
        values["data"] = nrng.standard_normal((rng.randint(1, 5), rng.randint(1, 9)), np.float32)
    elif issubclass(cls, Labels):
        del values["samples"]
        values["labels"] = nrng.integers(-(2**31), 2**31, rng.randint(1, 9), np.int32)
    elif issubclass(cls, WeightsChunk):
        count = values.pop("count") % 9 + 1
        values["offset"] %= 1000
        values["total"] = values["offset"] + count + rng.randrange(100)
        values["data"] = nrng.standard_normal(count, np.float32)
    elif cls is ErrorMessage:
        values["reason"] = "".join(rng.choices("ab é日\U0001f600", k=rng.randint(0, 50)))
    return cls(**values)


def _fields(message: Message) -> list[tuple[str, Any]]:
    return [
        (f.name, v.tolist() if isinstance(v, np.ndarray) else v)
        for f in dataclasses.fields(message)
        for v in [getattr(message, f.name)]
    ]


@pytest.mark.parametrize("cls", CLASSES, ids=_ids)
def test_every_message_round_trips_random_values(cls: type[Message]) -> None:
    for seed in SEEDS:
        rng = random.Random(seed)
        for _ in range(50):
            message = _random_message(cls, rng)
            payload = message.pack()
            data_len = len(payload) - FIXED_SIZE[cls.TYPE]
            assert data_len >= 0 and (data_len == 0 or cls.TYPE in HAS_DATA)
            cls.check(payload[: FIXED_SIZE[cls.TYPE]], data_len)
            again = cls.unpack(payload)
            assert type(again) is cls
            assert _fields(again) == _fields(message)
            assert again.pack() == payload


@pytest.mark.parametrize("cls", CLASSES, ids=_ids)
def test_a_fixed_part_of_any_other_size_is_malformed(cls: type[Message]) -> None:
    name, size = cls.TYPE.name, FIXED_SIZE[cls.TYPE]
    payload = _random_message(cls, random.Random(0)).pack()
    for cut in range(size):
        with pytest.raises(Malformed, match=rf"^{name} payload has {cut} bytes, must be {size}$"):
            cls.check(payload[:cut], 0)
        ending = f"needs {size}" if cls.DATA else f"must be {size}"
        with pytest.raises(Malformed, match=rf"^{name} payload has {cut} bytes, {ending}$"):
            cls.unpack(payload[:cut])
    longer = payload[:size] + b"\0"
    with pytest.raises(Malformed, match=rf"^{name} payload has {size + 1} bytes, must be {size}$"):
        cls.check(longer, 0)
    if cls.DATA is None:
        with pytest.raises(Malformed, match=rf"^{name} payload has {size + 1} bytes, must be"):
            cls.unpack(longer)


# Each enumeration field and the name its errors give it.
ENUM_LABELS = {
    (MessageType.HELLO, "role"): "role",
    (MessageType.HELLO_ACK, "role"): "role",
    (MessageType.ERROR, "code"): "error code",
    (MessageType.ACK, "acked_type"): "acked type",
    (MessageType.STATUS, "state"): "state",
    (MessageType.BATCH_BEGIN, "mode"): "mode",
    (MessageType.BATCH_BEGIN, "loss"): "loss",
    (MessageType.GET_WEIGHTS, "kind"): "tensor kind",
    (MessageType.WEIGHTS, "kind"): "tensor kind",
    (MessageType.SET_WEIGHTS, "kind"): "tensor kind",
}


def test_every_enumeration_field_refuses_unknown_values() -> None:
    found = {}
    rng = random.Random(1)
    for cls in CLASSES:
        for offset, row in zip(_offsets(cls.FIXED), cls.FIXED.rows, strict=True):
            if not isinstance(row, Field) or row.enum is None:
                continue
            found[cls.TYPE, row.name] = label = ENUM_LABELS[cls.TYPE, row.name]
            known = {int(v) for v in row.enum}
            for value in (0, max(known) + 1, (1 << (8 * struct.calcsize(row.fmt))) - 1):
                if value in known:
                    continue
                edited = bytearray(_random_message(cls, rng).pack())
                struct.pack_into("<" + row.fmt, edited, offset, value)
                payload, size = bytes(edited), cls.FIXED.size
                refused = rf"^{label} {value} is not a known value$"
                with pytest.raises(Malformed, match=refused) as info:
                    cls.unpack(payload)
                assert info.value.detail == value
                with pytest.raises(Malformed, match=refused):
                    cls.check(payload[:size], len(payload) - size)
    assert found == ENUM_LABELS


def test_every_attribute_is_a_field_of_the_payload_once() -> None:
    for cls in CLASSES:
        wire = [f.name for f in cls.FIXED.fields]
        assert len(set(wire)) == len(wire)
        if isinstance(cls.DATA, Elements):  # fixed fields that count the elements are derived
            assert set(cls.DATA.shape) <= set(wire)
            wire = [name for name in wire if name not in cls.DATA.shape]
        if cls.DATA is not None:
            wire.append(cls.DATA.attr)
        assert sorted(wire) == sorted(f.name for f in dataclasses.fields(cls))
