"""Field tables of the message payloads (docs/protocol.md, "Payloads").

A payload is a fixed part, then maybe a data part whose size the fixed part gives. A `Layout` lists
the fixed part's fields in wire order, as the rows of the type's table in the spec (`u8`, `u16`,
`u32`, `u64`, `f32`, `hash16`, `ascii_name`, `reserved`; little-endian); a data part is `Elements`
or `Text`. `messages.Message` packs, unpacks and checks every type from these descriptions.

A named field is the message attribute of that name; a reserved field is sent as zeros, not read.
"""

from __future__ import annotations

import math
import struct
from enum import IntEnum
from functools import partial
from typing import Any

import numpy as np

from nmcm_deploy.protocol.errors import Malformed
from nmcm_deploy.protocol.spec import HASH_SIZE

# The named fields of a received fixed part; then, with the data part, the constructor arguments.
Values = dict[str, Any]


class Field:
    """A named value in struct format `fmt`. With `enum`, a received value must be one of its
    members (`label` names the field in that error)."""

    def __init__(
        self, fmt: str, name: str, enum: type[IntEnum] | None = None, label: str | None = None
    ) -> None:
        self.fmt = fmt
        self.name = name
        self.enum = enum
        self.label = label or name.replace("_", " ")

    def to_wire(self, value: Any) -> Any:
        """The value as struct packs it; ValueError for one the field cannot carry."""
        return value

    def from_wire(self, raw: Any) -> Any:
        """The attribute value of a received field; Malformed for one the spec refuses."""
        if self.enum is None:
            return raw
        try:
            return self.enum(raw)
        except ValueError:
            raise Malformed(f"{self.label} {raw} is not a known value", detail=raw) from None


class Hash(Field):
    """u8[16]: exactly HASH_SIZE bytes."""

    def to_wire(self, value: bytes) -> bytes:
        if len(value) != HASH_SIZE:
            raise ValueError(f"{self.name} must be {HASH_SIZE} bytes, got {len(value)}")
        return value


class AsciiName(Field):
    """char[n]: ASCII, NUL-padded, so at most n - 1 characters."""

    def to_wire(self, value: str) -> bytes:
        name, size = value.encode("ascii"), struct.calcsize(self.fmt)
        if len(name) >= size:
            raise ValueError(f"{self.name} name longer than {size - 1} characters")
        return name

    def from_wire(self, raw: bytes) -> str:
        return raw.split(b"\0", 1)[0].decode("ascii", errors="replace")


class Reserved:
    def __init__(self, size: int) -> None:
        self.fmt = f"{size}x"


u8 = partial(Field, "B")
u16 = partial(Field, "H")
u32 = partial(Field, "I")
u64 = partial(Field, "Q")
f32 = partial(Field, "f")
hash16 = partial(Hash, f"{HASH_SIZE}s")
reserved = Reserved


def ascii_name(name: str, size: int) -> AsciiName:
    return AsciiName(f"{size}s", name)


class Layout:
    """A fixed part: `rows`, its fields in wire order; `fields`, the named ones."""

    def __init__(self, *rows: Field | Reserved) -> None:
        self.rows = rows
        self.fields = tuple(f for f in rows if isinstance(f, Field))
        self._struct = struct.Struct("<" + "".join(f.fmt for f in rows))
        self.size = self._struct.size

    def pack(self, message: object) -> bytes:
        return self._struct.pack(*(f.to_wire(getattr(message, f.name)) for f in self.fields))

    def unpack(self, fixed: bytes) -> Values:
        """The named fields of `fixed` (`size` bytes); enumerations are checked in wire order."""
        raw = self._struct.unpack(fixed)
        return {f.name: f.from_wire(v) for f, v in zip(self.fields, raw, strict=True)}


# A data part: `pack` it from the message, `check` the size the fixed part's values allow
# (Malformed), `unpack` it into the constructor arguments, which start as those values.


class Elements:
    """An array of `dtype` (at least one element) shaped by the fixed fields named in `shape`;
    those are derived from the array, not constructor arguments. `what` formats a size in errors."""

    def __init__(self, attr: str, dtype: np.dtype[Any], shape: tuple[str, ...], what: str) -> None:
        self.attr, self.dtype, self.shape, self.what = attr, dtype, shape, what

    def pack(self, message: object) -> bytes:
        data: np.ndarray[Any, Any] = getattr(message, self.attr)
        return data.tobytes()

    def check(self, type_name: str, values: Values, data_len: int) -> None:
        count = math.prod(values[name] for name in self.shape)
        if count < 1 or data_len != count * self.dtype.itemsize:
            what = self.what.format(**values)
            raise Malformed(f"{type_name} of {what} carries {data_len} bytes", detail=data_len)

    def unpack(self, values: Values, payload: bytes, offset: int) -> None:
        shape = [values.pop(name) for name in self.shape]
        values[self.attr] = np.frombuffer(payload, self.dtype, offset=offset).reshape(shape)


class Text:
    """UTF-8 text of at most `limit` bytes; longer text is cut on a character boundary to send."""

    def __init__(self, attr: str, limit: int) -> None:
        self.attr, self.limit = attr, limit

    def pack(self, message: object) -> bytes:
        text: str = getattr(message, self.attr)
        return text.encode("utf-8")[: self.limit].decode("utf-8", errors="ignore").encode("utf-8")

    def check(self, type_name: str, values: Values, data_len: int) -> None:
        if data_len > self.limit:
            raise Malformed(f"{type_name} {self.attr} of {data_len} bytes, at most {self.limit}")

    def unpack(self, values: Values, payload: bytes, offset: int) -> None:
        values[self.attr] = payload[offset:].decode("utf-8", errors="replace")


DataPart = Elements | Text
