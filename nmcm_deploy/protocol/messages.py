"""Payloads of every message type: one dataclass each, `pack()` to bytes and `unpack()` from bytes,
with the layouts of docs/protocol.md ("Payloads").

`unpack` checks everything the spec calls well-formed (sizes, enumeration ranges) and raises
`Malformed` otherwise, so a frame that FrameReader accepted always decodes. Tensors come back as
read-only numpy views of the payload (no copy); `.copy()` them to modify.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import numpy as np
import numpy.typing as npt

from nmcm_deploy.protocol.errors import Malformed
from nmcm_deploy.protocol.spec import (
    CLUSTER_FIELD_SIZE,
    FIXED_SIZE,
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

_E = TypeVar("_E", bound=int)


def _enum(kind: type[_E], value: int, what: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        raise Malformed(f"{what} {value} is not a known value", detail=value) from None


def _need(payload: bytes, size: int, what: MessageType) -> None:
    if len(payload) < size:
        raise Malformed(f"{what.name} payload has {len(payload)} bytes, needs {size}")


def _exact(payload: bytes, size: int, what: MessageType) -> None:
    if len(payload) != size:
        raise Malformed(f"{what.name} payload has {len(payload)} bytes, must be {size}")


def _hash(value: bytes, what: str) -> bytes:
    if len(value) != HASH_SIZE:
        raise ValueError(f"{what} must be {HASH_SIZE} bytes, got {len(value)}")
    return value


class Message:
    """Base of the payload classes. TYPE is the message type a class encodes."""

    TYPE: ClassVar[MessageType]

    def pack(self) -> bytes:
        raise NotImplementedError

    @classmethod
    def unpack(cls, payload: bytes) -> Message:
        raise NotImplementedError

    @classmethod
    def check(cls, fixed: bytes, data_len: int) -> None:
        """Check the fixed part and the data size it implies, before the data part is read.

        Fixed-only types have data_len 0 here (the header check made sure of it); unpacking the
        fixed part checks their enumerations.
        """
        cls.unpack(fixed)


# --- HELLO / HELLO_ACK -------------------------------------------------------------------------

_IDENTITY = struct.Struct("<BBHHHIIIHHII16s16s64s")
_H = TypeVar("_H", bound="Hello")


@dataclass(frozen=True)
class Hello(Message):
    """Identity of the sender (docs/protocol.md, "HELLO and HELLO_ACK")."""

    TYPE: ClassVar[MessageType] = MessageType.HELLO

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

    def pack(self) -> bytes:
        name = self.cluster.encode("ascii")
        if len(name) >= CLUSTER_FIELD_SIZE:
            raise ValueError(f"cluster name longer than {CLUSTER_FIELD_SIZE - 1} characters")
        return _IDENTITY.pack(
            self.role,
            0,
            self.stage_index,
            self.stage_count,
            self.micro_batch,
            self.max_payload,
            self.input_features,
            self.output_features,
            self.slots,
            self.tensor_count,
            self.instance,
            0,
            _hash(self.model_hash, "model_hash"),
            _hash(self.firmware_hash, "firmware_hash"),
            name,
        )

    @classmethod
    def unpack(cls: type[_H], payload: bytes) -> _H:
        _exact(payload, _IDENTITY.size, cls.TYPE)
        (role, _, stage, count, mb, limit, fin, fout, slots, tensors, inst, _, model, fw, name) = (
            _IDENTITY.unpack(payload)
        )
        return cls(
            role=_enum(Role, role, "role"),
            stage_index=stage,
            stage_count=count,
            max_payload=limit,
            model_hash=model,
            firmware_hash=fw,
            cluster=name.split(b"\0", 1)[0].decode("ascii", errors="replace"),
            micro_batch=mb,
            input_features=fin,
            output_features=fout,
            slots=slots,
            tensor_count=tensors,
            instance=inst,
        )


@dataclass(frozen=True)
class HelloAck(Hello):
    TYPE: ClassVar[MessageType] = MessageType.HELLO_ACK


# --- ERROR, ACK, SHUTDOWN, STATUS_REQUEST ------------------------------------------------------

_ERROR = struct.Struct("<HHI")


@dataclass(frozen=True)
class ErrorMessage(Message):
    """ERROR: a code, the offending value, and a reason for people (cut to 200 bytes of UTF-8)."""

    TYPE: ClassVar[MessageType] = MessageType.ERROR

    code: ErrorCode
    reason: str = ""
    detail: int = 0

    def pack(self) -> bytes:
        text = self.reason.encode("utf-8")[:MAX_ERROR_TEXT].decode("utf-8", errors="ignore")
        return _ERROR.pack(self.code, 0, self.detail) + text.encode("utf-8")

    @classmethod
    def check(cls, fixed: bytes, data_len: int) -> None:
        _exact(fixed, _ERROR.size, cls.TYPE)
        _enum(ErrorCode, _ERROR.unpack(fixed)[0], "error code")
        if data_len > MAX_ERROR_TEXT:
            raise Malformed(f"ERROR reason of {data_len} bytes, at most {MAX_ERROR_TEXT}")

    @classmethod
    def unpack(cls, payload: bytes) -> ErrorMessage:
        _need(payload, _ERROR.size, cls.TYPE)
        cls.check(payload[: _ERROR.size], len(payload) - _ERROR.size)
        code, _, detail = _ERROR.unpack_from(payload)
        reason = payload[_ERROR.size :].decode("utf-8", errors="replace")
        return cls(code=ErrorCode(code), reason=reason, detail=detail)


_ACK = struct.Struct("<BBHI")


@dataclass(frozen=True)
class Ack(Message):
    TYPE: ClassVar[MessageType] = MessageType.ACK

    acked_type: MessageType
    acked_sequence: int

    def pack(self) -> bytes:
        return _ACK.pack(self.acked_type, 0, 0, self.acked_sequence)

    @classmethod
    def unpack(cls, payload: bytes) -> Ack:
        _exact(payload, _ACK.size, cls.TYPE)
        acked, _, _, seq = _ACK.unpack(payload)
        return cls(acked_type=_enum(MessageType, acked, "acked type"), acked_sequence=seq)


@dataclass(frozen=True)
class Shutdown(Message):
    TYPE: ClassVar[MessageType] = MessageType.SHUTDOWN

    def pack(self) -> bytes:
        return b""

    @classmethod
    def unpack(cls, payload: bytes) -> Shutdown:
        _exact(payload, 0, cls.TYPE)
        return cls()


@dataclass(frozen=True)
class StatusRequest(Message):
    TYPE: ClassVar[MessageType] = MessageType.STATUS_REQUEST

    def pack(self) -> bytes:
        return b""

    @classmethod
    def unpack(cls, payload: bytes) -> StatusRequest:
        _exact(payload, 0, cls.TYPE)
        return cls()


# --- STATUS ------------------------------------------------------------------------------------

_STATUS = struct.Struct("<HHBBHIIfIIIQQQQQIIIIII16s16s")


@dataclass(frozen=True)
class StatusReport(Message):
    """STATUS: where a node is and what it has spent. Counters are in ticks of `tick_hz`."""

    TYPE: ClassVar[MessageType] = MessageType.STATUS

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

    def pack(self) -> bytes:
        return _STATUS.pack(
            self.stage_index,
            self.stage_count,
            self.state,
            0,
            0,
            self.steps,
            self.batch,
            self.last_loss,
            self.arena_used,
            self.arena_capacity,
            self.tick_hz,
            self.compute_ticks,
            self.comm_ticks,
            self.idle_ticks,
            self.bytes_sent,
            self.bytes_received,
            self.frames_sent,
            self.frames_received,
            self.frames_rejected,
            self.uptime_ms,
            0,
            0,
            _hash(self.model_hash, "model_hash"),
            _hash(self.firmware_hash, "firmware_hash"),
        )

    @classmethod
    def unpack(cls, payload: bytes) -> StatusReport:
        _exact(payload, _STATUS.size, cls.TYPE)
        v = _STATUS.unpack(payload)
        return cls(
            stage_index=v[0],
            stage_count=v[1],
            state=_enum(NodeState, v[2], "state"),
            steps=v[5],
            batch=v[6],
            last_loss=v[7],
            arena_used=v[8],
            arena_capacity=v[9],
            tick_hz=v[10],
            compute_ticks=v[11],
            comm_ticks=v[12],
            idle_ticks=v[13],
            bytes_sent=v[14],
            bytes_received=v[15],
            frames_sent=v[16],
            frames_received=v[17],
            frames_rejected=v[18],
            uptime_ms=v[19],
            model_hash=v[22],
            firmware_hash=v[23],
        )


# --- BATCH_BEGIN, METRICS, STEP ----------------------------------------------------------------

_BATCH_BEGIN = struct.Struct("<HHBBHII")


@dataclass(frozen=True)
class BatchBegin(Message):
    """Opens the batch named in the frame header: B samples in M micro-batches."""

    TYPE: ClassVar[MessageType] = MessageType.BATCH_BEGIN

    batch_size: int
    micro_batches: int
    mode: Mode = Mode.TRAIN
    loss: LossKind = LossKind.CROSS_ENTROPY
    epoch: int = 0

    def pack(self) -> bytes:
        return _BATCH_BEGIN.pack(
            self.batch_size, self.micro_batches, self.mode, self.loss, 0, self.epoch, 0
        )

    @classmethod
    def unpack(cls, payload: bytes) -> BatchBegin:
        _exact(payload, _BATCH_BEGIN.size, cls.TYPE)
        size, count, mode, loss, _, epoch, _ = _BATCH_BEGIN.unpack(payload)
        return cls(
            batch_size=size,
            micro_batches=count,
            mode=_enum(Mode, mode, "mode"),
            loss=_enum(LossKind, loss, "loss"),
            epoch=epoch,
        )


_METRICS = struct.Struct("<fIII")


@dataclass(frozen=True)
class Metrics(Message):
    """One micro-batch's loss sum (Σ per-sample loss), correct predictions and sample count."""

    TYPE: ClassVar[MessageType] = MessageType.METRICS

    loss_sum: float
    correct: int
    samples: int

    def pack(self) -> bytes:
        return _METRICS.pack(self.loss_sum, self.correct, self.samples, 0)

    @classmethod
    def unpack(cls, payload: bytes) -> Metrics:
        _exact(payload, _METRICS.size, cls.TYPE)
        loss, correct, samples, _ = _METRICS.unpack(payload)
        return cls(loss_sum=loss, correct=correct, samples=samples)


_STEP = struct.Struct("<fffI")


@dataclass(frozen=True)
class Step(Message):
    """Apply torch.optim.SGD to the gradients of the batch named in the header."""

    TYPE: ClassVar[MessageType] = MessageType.STEP

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0

    def pack(self) -> bytes:
        return _STEP.pack(self.lr, self.momentum, self.weight_decay, 0)

    @classmethod
    def unpack(cls, payload: bytes) -> Step:
        _exact(payload, _STEP.size, cls.TYPE)
        lr, momentum, decay, _ = _STEP.unpack(payload)
        return cls(lr=lr, momentum=momentum, weight_decay=decay)


# --- INPUTS, ACTIVATIONS, GRADIENTS, LABELS ----------------------------------------------------

_TENSOR = struct.Struct("<HHI")
_T = TypeVar("_T", bound="TensorMessage")


def _float_rows(data: object) -> FloatArray:
    arr = np.ascontiguousarray(data, dtype=F32)
    if arr.ndim < 2:
        raise ValueError("a micro-batch tensor is shaped [samples, ...]")
    return arr.reshape(arr.shape[0], -1)


@dataclass(frozen=True, eq=False)
class TensorMessage(Message):
    """A micro-batch tensor, [samples, features] float32 (any trailing shape is flattened)."""

    data: FloatArray = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _float_rows(self.data))

    @property
    def samples(self) -> int:
        return int(self.data.shape[0])

    @property
    def features(self) -> int:
        return int(self.data.shape[1])

    def pack(self) -> bytes:
        if not 1 <= self.samples <= 0xFFFF or self.features < 1:
            raise ValueError(f"cannot send a tensor shaped {self.data.shape}")
        return _TENSOR.pack(self.samples, 0, self.features) + self.data.tobytes()

    @classmethod
    def check(cls, fixed: bytes, data_len: int) -> None:
        _exact(fixed, _TENSOR.size, cls.TYPE)
        samples, _, features = _TENSOR.unpack(fixed)
        if samples < 1 or features < 1:
            raise Malformed(f"{cls.TYPE.name} of {samples} samples x {features} features")
        if data_len != samples * features * 4:
            raise Malformed(
                f"{cls.TYPE.name} of {samples} x {features} floats carries {data_len} bytes",
                detail=data_len,
            )

    @classmethod
    def unpack(cls: type[_T], payload: bytes) -> _T:
        _need(payload, _TENSOR.size, cls.TYPE)
        cls.check(payload[: _TENSOR.size], len(payload) - _TENSOR.size)
        samples, _, features = _TENSOR.unpack_from(payload)
        data = np.frombuffer(payload, dtype=F32, offset=_TENSOR.size)
        return cls(data=data.reshape(samples, features))


@dataclass(frozen=True, eq=False)
class Inputs(TensorMessage):
    TYPE: ClassVar[MessageType] = MessageType.INPUTS


@dataclass(frozen=True, eq=False)
class Activations(TensorMessage):
    TYPE: ClassVar[MessageType] = MessageType.ACTIVATIONS


@dataclass(frozen=True, eq=False)
class Gradients(TensorMessage):
    TYPE: ClassVar[MessageType] = MessageType.GRADIENTS


_LABELS = struct.Struct("<HH")


@dataclass(frozen=True, eq=False)
class Labels(Message):
    """Class ids of one micro-batch, int32."""

    TYPE: ClassVar[MessageType] = MessageType.LABELS

    labels: IntArray = field(repr=False)

    def __post_init__(self) -> None:
        arr = np.ascontiguousarray(self.labels, dtype=I32)
        if arr.ndim != 1:
            raise ValueError("labels are one class id per sample")
        object.__setattr__(self, "labels", arr)

    @property
    def samples(self) -> int:
        return int(self.labels.shape[0])

    def pack(self) -> bytes:
        if not 1 <= self.samples <= 0xFFFF:
            raise ValueError(f"cannot send {self.samples} labels")
        return _LABELS.pack(self.samples, 0) + self.labels.tobytes()

    @classmethod
    def check(cls, fixed: bytes, data_len: int) -> None:
        _exact(fixed, _LABELS.size, cls.TYPE)
        samples = _LABELS.unpack(fixed)[0]
        if samples < 1 or data_len != samples * 4:
            raise Malformed(
                f"LABELS of {samples} samples carries {data_len} bytes", detail=data_len
            )

    @classmethod
    def unpack(cls, payload: bytes) -> Labels:
        _need(payload, _LABELS.size, cls.TYPE)
        cls.check(payload[: _LABELS.size], len(payload) - _LABELS.size)
        return cls(labels=np.frombuffer(payload, dtype=I32, offset=_LABELS.size))


# --- GET_WEIGHTS, WEIGHTS, SET_WEIGHTS ---------------------------------------------------------

_GET_WEIGHTS = struct.Struct("<HBBIII")


@dataclass(frozen=True)
class GetWeights(Message):
    TYPE: ClassVar[MessageType] = MessageType.GET_WEIGHTS

    tensor: int
    offset: int
    count: int
    kind: TensorKind = TensorKind.PARAMETER

    def pack(self) -> bytes:
        return _GET_WEIGHTS.pack(self.tensor, self.kind, 0, self.offset, self.count, 0)

    @classmethod
    def unpack(cls, payload: bytes) -> GetWeights:
        _exact(payload, _GET_WEIGHTS.size, cls.TYPE)
        tensor, kind, _, offset, count, _ = _GET_WEIGHTS.unpack(payload)
        if count < 1:
            raise Malformed("GET_WEIGHTS of 0 elements")
        return cls(
            tensor=tensor, offset=offset, count=count, kind=_enum(TensorKind, kind, "tensor kind")
        )


_CHUNK = struct.Struct("<HBBIII")
_W = TypeVar("_W", bound="WeightsChunk")


@dataclass(frozen=True, eq=False)
class WeightsChunk(Message):
    """Elements offset .. offset+len(data)-1 of a tensor of `total` elements."""

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

    def pack(self) -> bytes:
        if self.count < 1 or self.offset + self.count > self.total:
            raise ValueError(f"chunk [{self.offset}, +{self.count}) outside {self.total} elements")
        fixed = _CHUNK.pack(self.tensor, self.kind, 0, self.offset, self.count, self.total)
        return fixed + self.data.tobytes()

    @classmethod
    def check(cls, fixed: bytes, data_len: int) -> None:
        _exact(fixed, _CHUNK.size, cls.TYPE)
        _, kind, _, offset, count, total = _CHUNK.unpack(fixed)
        _enum(TensorKind, kind, "tensor kind")
        if count < 1 or offset + count > total:
            raise Malformed(f"{cls.TYPE.name} chunk [{offset}, +{count}) of {total} elements")
        if data_len != count * 4:
            raise Malformed(
                f"{cls.TYPE.name} of {count} floats carries {data_len} bytes", detail=data_len
            )

    @classmethod
    def unpack(cls: type[_W], payload: bytes) -> _W:
        _need(payload, _CHUNK.size, cls.TYPE)
        cls.check(payload[: _CHUNK.size], len(payload) - _CHUNK.size)
        tensor, kind, _, offset, _, total = _CHUNK.unpack_from(payload)
        return cls(
            tensor=tensor,
            offset=offset,
            total=total,
            data=np.frombuffer(payload, dtype=F32, offset=_CHUNK.size),
            kind=TensorKind(kind),
        )


@dataclass(frozen=True, eq=False)
class Weights(WeightsChunk):
    TYPE: ClassVar[MessageType] = MessageType.WEIGHTS


@dataclass(frozen=True, eq=False)
class SetWeights(WeightsChunk):
    TYPE: ClassVar[MessageType] = MessageType.SET_WEIGHTS


# --- registry ----------------------------------------------------------------------------------

MESSAGE_CLASSES: dict[MessageType, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        HelloAck,
        ErrorMessage,
        Ack,
        Shutdown,
        StatusRequest,
        StatusReport,
        BatchBegin,
        Inputs,
        Labels,
        Activations,
        Gradients,
        Metrics,
        Step,
        GetWeights,
        Weights,
        SetWeights,
    )
}
assert set(MESSAGE_CLASSES) == set(FIXED_SIZE) == set(MessageType)


def check_fixed(type_: MessageType, fixed: bytes, data_len: int) -> None:
    """The fixed-part check of docs/protocol.md ("Checks", step 9); raises Malformed."""
    MESSAGE_CLASSES[type_].check(fixed, data_len)


def decode_message(type_: MessageType, payload: bytes) -> Message:
    """The payload of a frame of type `type_`, decoded and checked."""
    return MESSAGE_CLASSES[type_].unpack(payload)
