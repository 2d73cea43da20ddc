"""Payloads of every message type: one dataclass each, `pack()` to bytes and `unpack()` from bytes,
with the layouts of docs/protocol.md ("Payloads").

Each class states its payload once: `FIXED`, the fields of its fixed part in wire order, and `DATA`,
the data part that may follow (fields.py). `Message` packs, unpacks and checks every type from
these; a class adds a hook only for a rule across fields (`_check_fields`) or for values the format
cannot carry (`_check_sendable`).

`unpack` checks everything the spec calls well-formed (sizes, enumeration ranges) and raises
`Malformed` otherwise, so a frame that FrameReader accepted always decodes. Tensors come back as
read-only numpy views of the payload (no copy); `.copy()` them to modify.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from nmcm_deploy.protocol.errors import Malformed
from nmcm_deploy.protocol.fields import (
    DataPart,
    Elements,
    Layout,
    Text,
    Values,
    ascii_name,
    f32,
    hash16,
    reserved,
    u8,
    u16,
    u32,
    u64,
)
from nmcm_deploy.protocol.spec import (
    CLUSTER_FIELD_SIZE,
    FIXED_SIZE,
    HAS_DATA,
    HASH_SIZE,
    MAX_ERROR_TEXT,
    ErrorCode,
    LossKind,
    MessageType,
    Mode,
    NodeState,
    Role,
    TensorKind,
)

F32 = np.dtype("<f4")
I32 = np.dtype("<i4")
FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int32]

_M = TypeVar("_M", bound="Message")


def _sized(payload: bytes, size: int, type_: MessageType, *, exact: bool) -> None:
    if len(payload) < size or (exact and len(payload) != size):
        rule = "must be" if exact else "needs"
        raise Malformed(f"{type_.name} payload has {len(payload)} bytes, {rule} {size}")


class Message:
    """Base of the payload classes. TYPE is the message type a class encodes, FIXED its fixed part,
    DATA its data part (None for a fixed-only type)."""

    TYPE: ClassVar[MessageType]
    FIXED: ClassVar[Layout] = Layout()
    DATA: ClassVar[DataPart | None] = None

    def pack(self) -> bytes:
        self._check_sendable()
        data = b"" if self.DATA is None else self.DATA.pack(self)
        return self.FIXED.pack(self) + data

    @classmethod
    def unpack(cls: type[_M], payload: bytes) -> _M:
        size = cls.FIXED.size
        _sized(payload, size, cls.TYPE, exact=cls.DATA is None)
        values = cls._fixed_values(payload[:size], len(payload) - size)
        if cls.DATA is not None:
            cls.DATA.unpack(values, payload, size)
        return cls(**values)

    @classmethod
    def check(cls, fixed: bytes, data_len: int) -> None:
        """Check the fixed part and the data size it implies, before the data part is read.

        Fixed-only types have data_len 0 here (the header check made sure of it).
        """
        cls._fixed_values(fixed, data_len)

    @classmethod
    def _fixed_values(cls, fixed: bytes, data_len: int) -> Values:
        # Size, enumerations, rules across fields, then the data size: the C++ decoder's order.
        _sized(fixed, cls.FIXED.size, cls.TYPE, exact=True)
        values = cls.FIXED.unpack(fixed)
        cls._check_fields(values)
        if cls.DATA is not None:
            cls.DATA.check(cls.TYPE.name, values, data_len)
        return values

    @classmethod
    def _check_fields(cls, values: Values) -> None:
        """Raises Malformed for a received fixed part that breaks a rule its field table cannot
        state (a count that must be positive, a range that must fit)."""

    def _check_sendable(self) -> None:
        """Raises ValueError for a message the format cannot carry, before anything is packed."""


# --- HELLO / HELLO_ACK -------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello(Message):
    """Identity of the sender (docs/protocol.md, "HELLO and HELLO_ACK")."""

    TYPE = MessageType.HELLO
    FIXED = Layout(
        u8("role", Role),
        reserved(1),
        u16("stage_index"),
        u16("stage_count"),
        u16("micro_batch"),
        u32("max_payload"),
        u32("input_features"),
        u32("output_features"),
        u16("slots"),
        u16("tensor_count"),
        u32("instance"),
        reserved(4),
        hash16("model_hash"),
        hash16("firmware_hash"),
        ascii_name("cluster", CLUSTER_FIELD_SIZE),
    )

    role: Role
    stage_index: int
    stage_count: int
    max_payload: int
    model_hash: bytes = bytes(HASH_SIZE)
    firmware_hash: bytes = bytes(HASH_SIZE)
    cluster: str = ""
    micro_batch: int = 0
    input_features: int = 0
    output_features: int = 0
    slots: int = 0
    tensor_count: int = 0
    instance: int = 0  # a node: the number it was started with (HELLO_ACK); else 0


@dataclass(frozen=True)
class HelloAck(Hello):
    TYPE = MessageType.HELLO_ACK


# --- ERROR, ACK, SHUTDOWN, STATUS_REQUEST ------------------------------------------------------


@dataclass(frozen=True)
class ErrorMessage(Message):
    """ERROR: a code, the offending value, and a reason for people (cut to 200 bytes of UTF-8)."""

    TYPE = MessageType.ERROR
    FIXED = Layout(u16("code", ErrorCode, "error code"), reserved(2), u32("detail"))
    DATA = Text("reason", MAX_ERROR_TEXT)

    code: ErrorCode
    reason: str = ""
    detail: int = 0


@dataclass(frozen=True)
class Ack(Message):
    TYPE = MessageType.ACK
    FIXED = Layout(u8("acked_type", MessageType), reserved(1), reserved(2), u32("acked_sequence"))

    acked_type: MessageType
    acked_sequence: int


@dataclass(frozen=True)
class Shutdown(Message):
    TYPE = MessageType.SHUTDOWN


@dataclass(frozen=True)
class StatusRequest(Message):
    TYPE = MessageType.STATUS_REQUEST


# --- STATUS ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatusReport(Message):
    """STATUS: where a node is and what it has spent. Counters are in ticks of `tick_hz`."""

    TYPE = MessageType.STATUS
    FIXED = Layout(
        u16("stage_index"),
        u16("stage_count"),
        u8("state", NodeState),
        reserved(1),
        reserved(2),
        u32("steps"),
        u32("batch"),
        f32("last_loss"),
        u32("arena_used"),
        u32("arena_capacity"),
        u32("tick_hz"),
        u64("compute_ticks"),
        u64("comm_ticks"),
        u64("idle_ticks"),
        u64("bytes_sent"),
        u64("bytes_received"),
        u32("frames_sent"),
        u32("frames_received"),
        u32("frames_rejected"),
        u32("uptime_ms"),
        reserved(4),
        reserved(4),
        hash16("model_hash"),
        hash16("firmware_hash"),
    )

    stage_index: int
    stage_count: int
    state: NodeState
    steps: int = 0
    batch: int = 0
    last_loss: float = math.nan
    arena_used: int = 0
    arena_capacity: int = 0
    tick_hz: int = 0
    compute_ticks: int = 0
    comm_ticks: int = 0
    idle_ticks: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    frames_rejected: int = 0
    uptime_ms: int = 0
    model_hash: bytes = bytes(HASH_SIZE)
    firmware_hash: bytes = bytes(HASH_SIZE)

    def seconds(self, ticks: int) -> float:
        """A tick counter in seconds (0 when the node reports no clock)."""
        return ticks / self.tick_hz if self.tick_hz else 0.0


# --- BATCH_BEGIN, METRICS, STEP ----------------------------------------------------------------


@dataclass(frozen=True)
class BatchBegin(Message):
    """Opens the batch named in the frame header: B samples in M micro-batches."""

    TYPE = MessageType.BATCH_BEGIN
    FIXED = Layout(
        u16("batch_size"),
        u16("micro_batches"),
        u8("mode", Mode),
        u8("loss", LossKind),
        reserved(2),
        u32("epoch"),
        reserved(4),
    )

    batch_size: int
    micro_batches: int
    mode: Mode = Mode.TRAIN
    loss: LossKind = LossKind.CROSS_ENTROPY
    epoch: int = 0


@dataclass(frozen=True)
class Metrics(Message):
    """One micro-batch's loss sum (Σ per-sample loss), correct predictions and sample count."""

    TYPE = MessageType.METRICS
    FIXED = Layout(f32("loss_sum"), u32("correct"), u32("samples"), reserved(4))

    loss_sum: float
    correct: int
    samples: int


@dataclass(frozen=True)
class Step(Message):
    """Apply torch.optim.SGD to the gradients of the batch named in the header."""

    TYPE = MessageType.STEP
    FIXED = Layout(f32("lr"), f32("momentum"), f32("weight_decay"), reserved(4))

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0


# --- INPUTS, ACTIVATIONS, GRADIENTS, LABELS ----------------------------------------------------


def _float_rows(data: object) -> FloatArray:
    arr = np.ascontiguousarray(data, dtype=F32)
    if arr.ndim < 2:
        raise ValueError("a micro-batch tensor is shaped [samples, ...]")
    return arr.reshape(arr.shape[0], -1)


@dataclass(frozen=True, eq=False)
class TensorMessage(Message):
    """A micro-batch tensor, [samples, features] float32 (any trailing shape is flattened)."""

    FIXED = Layout(u16("samples"), reserved(2), u32("features"))
    DATA = Elements("data", F32, ("samples", "features"), "{samples} x {features} floats")

    data: FloatArray = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _float_rows(self.data))

    @property
    def samples(self) -> int:
        return int(self.data.shape[0])

    @property
    def features(self) -> int:
        return int(self.data.shape[1])

    def _check_sendable(self) -> None:
        if not 1 <= self.samples <= 0xFFFF or self.features < 1:
            raise ValueError(f"cannot send a tensor shaped {self.data.shape}")

    @classmethod
    def _check_fields(cls, values: Values) -> None:
        samples, features = values["samples"], values["features"]
        if samples < 1 or features < 1:
            raise Malformed(f"{cls.TYPE.name} of {samples} samples x {features} features")


# The tensor messages differ only in their type: without fields of their own they stay the
# dataclass TensorMessage is (frozen, its fields, its equality) without a decorator of their own.
class Inputs(TensorMessage):
    TYPE = MessageType.INPUTS


class Activations(TensorMessage):
    TYPE = MessageType.ACTIVATIONS


class Gradients(TensorMessage):
    TYPE = MessageType.GRADIENTS


@dataclass(frozen=True, eq=False)
class Labels(Message):
    """Class ids of one micro-batch, int32."""

    TYPE = MessageType.LABELS
    FIXED = Layout(u16("samples"), reserved(2))
    DATA = Elements("labels", I32, ("samples",), "{samples} samples")

    labels: IntArray = field(repr=False)

    def __post_init__(self) -> None:
        arr = np.ascontiguousarray(self.labels, dtype=I32)
        if arr.ndim != 1:
            raise ValueError("labels are one class id per sample")
        object.__setattr__(self, "labels", arr)

    @property
    def samples(self) -> int:
        return int(self.labels.shape[0])

    def _check_sendable(self) -> None:
        if not 1 <= self.samples <= 0xFFFF:
            raise ValueError(f"cannot send {self.samples} labels")


# --- GET_WEIGHTS, WEIGHTS, SET_WEIGHTS ---------------------------------------------------------


@dataclass(frozen=True)
class GetWeights(Message):
    TYPE = MessageType.GET_WEIGHTS
    FIXED = Layout(
        u16("tensor"),
        u8("kind", TensorKind, "tensor kind"),
        reserved(1),
        u32("offset"),
        u32("count"),
        reserved(4),
    )

    tensor: int
    offset: int
    count: int
    kind: TensorKind = TensorKind.PARAMETER

    @classmethod
    def _check_fields(cls, values: Values) -> None:
        if values["count"] < 1:
            raise Malformed("GET_WEIGHTS of 0 elements")


@dataclass(frozen=True, eq=False)
class WeightsChunk(Message):
    """Elements offset .. offset+len(data)-1 of a tensor of `total` elements."""

    FIXED = Layout(
        u16("tensor"),
        u8("kind", TensorKind, "tensor kind"),
        reserved(1),
        u32("offset"),
        u32("count"),
        u32("total"),
    )
    DATA = Elements("data", F32, ("count",), "{count} floats")

    tensor: int
    offset: int
    total: int
    data: FloatArray = field(repr=False)
    kind: TensorKind = TensorKind.PARAMETER

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", np.ascontiguousarray(self.data, dtype=F32).reshape(-1))

    @property
    def count(self) -> int:
        return int(self.data.shape[0])

    def _check_sendable(self) -> None:
        if self.count < 1 or self.offset + self.count > self.total:
            raise ValueError(f"chunk [{self.offset}, +{self.count}) outside {self.total} elements")

    @classmethod
    def _check_fields(cls, values: Values) -> None:
        offset, count, total = values["offset"], values["count"], values["total"]
        if count < 1 or offset + count > total:
            raise Malformed(f"{cls.TYPE.name} chunk [{offset}, +{count}) of {total} elements")


class Weights(WeightsChunk):
    TYPE = MessageType.WEIGHTS


class SetWeights(WeightsChunk):
    TYPE = MessageType.SET_WEIGHTS


# --- registry ----------------------------------------------------------------------------------


def _concrete(base: type[Message]) -> Iterator[type[Message]]:
    """Every class below `base` that states a TYPE."""
    for cls in base.__subclasses__():
        if "TYPE" in vars(cls):
            yield cls
        yield from _concrete(cls)


_BY_TYPE = {cls.TYPE: cls for cls in _concrete(Message)}
MESSAGE_CLASSES: dict[MessageType, type[Message]] = {
    type_: _BY_TYPE[type_] for type_ in MessageType
}
# Every type has a class, and its field table has the sizes of spec.py (as the C++ header).
assert all(
    cls.FIXED.size == FIXED_SIZE[type_] and (cls.DATA is not None) == (type_ in HAS_DATA)
    for type_, cls in MESSAGE_CLASSES.items()
)


def check_fixed(type_: MessageType, fixed: bytes, data_len: int) -> None:
    """The fixed-part check of docs/protocol.md ("Checks", step 9); raises Malformed."""
    MESSAGE_CLASSES[type_].check(fixed, data_len)


def decode_message(type_: MessageType, payload: bytes) -> Message:
    """The payload of a frame of type `type_`, decoded and checked."""
    return MESSAGE_CLASSES[type_].unpack(payload)
