"""The Python codec of the wire protocol (docs/protocol.md) against the shared test vectors, plus
round trips, sockets, timeouts and the helpers the coordinator uses."""

from __future__ import annotations

import importlib.util
import io
import json
import socket
import sys
import threading
import time
import zlib
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nmcm_deploy.errors import NmcmError
from nmcm_deploy.protocol import (
    FIXED_SIZE,
    HEADER_SIZE,
    MIN_PAYLOAD_LIMIT,
    Ack,
    Activations,
    BatchBegin,
    ConnectionClosed,
    ErrorCode,
    ErrorMessage,
    Flags,
    Frame,
    FrameReader,
    FrameTooLarge,
    FrameWriter,
    GetWeights,
    Gradients,
    Hello,
    HelloAck,
    Inputs,
    Labels,
    LossKind,
    Malformed,
    Message,
    MessageType,
    Metrics,
    Mode,
    NodeState,
    ProtocolError,
    ProtocolTimeout,
    RemoteError,
    Role,
    SetWeights,
    Shutdown,
    StatusReport,
    StatusRequest,
    Step,
    TensorKind,
    UnexpectedMessage,
    Weights,
    decode_frames,
    encode,
    expect,
    payload_limit,
)

VECTORS = Path(__file__).resolve().parent / "vectors" / "protocol"
INDEX: dict[str, Any] = json.loads((VECTORS / "vectors.json").read_text())


def _norm(value: object) -> object:
    """A decoded field in the form vectors.json writes it."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _describe(frame: Frame, expected_fields: dict[str, Any]) -> dict[str, Any]:
    message = frame.message()
    data = frame.payload[FIXED_SIZE[frame.type] :]
    return {
        "type": int(frame.type),
        "flags": int(frame.header.flags),
        "sequence": frame.header.sequence,
        "batch": frame.header.batch,
        "micro_batch": frame.header.micro_batch,
        "payload_length": frame.header.payload_length,
        "data_length": len(data),
        "data_crc32": zlib.crc32(data),
        "fields": {name: _norm(getattr(message, name)) for name in expected_fields},
    }


def _read_all(reader: FrameReader) -> tuple[list[Frame], ProtocolError | None]:
    frames: list[Frame] = []
    while True:
        try:
            frames.append(reader.read())
        except ConnectionClosed:
            return frames, None
        except ProtocolError as exc:
            return frames, exc


def _vector_ids() -> list[str]:
    return [v["name"] for v in INDEX["vectors"]]


@pytest.mark.parametrize("vector", INDEX["vectors"], ids=_vector_ids())
def test_vector_decodes_as_described(vector: dict[str, Any]) -> None:
    data = (VECTORS / vector["file"]).read_bytes()
    reader = FrameReader(
        io.BytesIO(data),
        max_payload=vector["max_payload"],
        check_sequence=vector["check_sequence"],
    )
    frames, error = _read_all(reader)
    described = [_describe(f, e["fields"]) for f, e in zip(frames, vector["frames"], strict=False)]
    assert described == vector["frames"]
    assert (error.kind if error else None) == vector["error"]


@pytest.mark.parametrize(
    "vector", [v for v in INDEX["vectors"] if v["error"] is None], ids=lambda v: v["name"]
)
def test_encoder_reproduces_valid_vector_bytes(vector: dict[str, Any]) -> None:
    data = (VECTORS / vector["file"]).read_bytes()
    frames = decode_frames(data, max_payload=vector["max_payload"])
    again = b"".join(
        encode(
            f.message(),
            sequence=f.header.sequence,
            batch=f.header.batch,
            micro_batch=f.header.micro_batch,
            flags=f.header.flags,
        )
        for f in frames
    )
    assert again == data


def test_vector_files_are_up_to_date() -> None:
    spec = importlib.util.spec_from_file_location("generate", VECTORS / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = generate  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(generate)
    finally:
        del sys.modules[spec.name]
    files: dict[str, bytes] = generate.build()
    on_disk = {p.name for p in VECTORS.iterdir() if p.suffix in (".bin", ".json", ".txt")}
    assert on_disk == set(files), "run tests/vectors/protocol/generate.py"
    for name, content in files.items():
        assert (VECTORS / name).read_bytes() == content, f"{name} is stale: run generate.py"


def test_vectors_cover_every_type_and_every_decode_error() -> None:
    types = {f["type"] for v in INDEX["vectors"] for f in v["frames"]}
    assert types == {int(t) for t in MessageType}
    errors = {v["error"] for v in INDEX["vectors"] if v["error"]}
    assert errors == {
        "bad_magic",
        "bad_version",
        "bad_header",
        "unknown_type",
        "too_large",
        "malformed",
        "bad_crc",
        "truncated",
        "sequence",
    }


# --- round trips ---------------------------------------------------------------------------------

HASH = bytes(range(16))
MESSAGES: list[Message] = [
    Hello(Role.COORDINATOR, 1, 2, 65536, model_hash=HASH, cluster="c"),
    HelloAck(Role.NODE, 1, 2, 2056, HASH, HASH, "c", 8, 64, 10, 2, 4),
    ErrorMessage(ErrorCode.STAGE_MISMATCH, "features 64 != 63", 64),
    Ack(MessageType.STEP, 9),
    Shutdown(),
    StatusRequest(),
    StatusReport(1, 2, NodeState.TRAINING, steps=3, last_loss=0.5, tick_hz=10**9, bytes_sent=2**40),
    BatchBegin(16, 2, Mode.EVAL, LossKind.MSE, epoch=3),
    Metrics(1.5, 3, 4),
    Step(0.5, 0.25, 0.125),
    GetWeights(2, 10, 100, TensorKind.GRADIENT),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m.TYPE.name)
def test_message_round_trip(message: Message) -> None:
    frames = decode_frames(encode(message, sequence=0, batch=5, micro_batch=1), max_payload=4096)
    assert len(frames) == 1
    assert frames[0].header.batch == 5 and frames[0].header.micro_batch == 1
    assert frames[0].message() == message


@pytest.mark.parametrize("kind", [Inputs, Activations, Gradients])
def test_tensor_round_trip_flattens_per_sample_shape(kind: type[Inputs]) -> None:
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 4)).astype(np.float32)
    (frame,) = decode_frames(encode(kind(x), sequence=0), max_payload=4096)
    message = frame.message()
    assert isinstance(message, kind)
    assert (message.samples, message.features) == (3, 32)
    np.testing.assert_array_equal(message.data, x.reshape(3, 32))


def test_labels_and_weights_round_trip() -> None:
    y = np.array([3, 0, 9], dtype=np.int64)
    (frame,) = decode_frames(encode(Labels(y), sequence=0), max_payload=4096)
    labels = frame.message()
    assert isinstance(labels, Labels)
    np.testing.assert_array_equal(labels.labels, y)
    for kind in (Weights, SetWeights):
        w = np.linspace(-1, 1, 7, dtype=np.float32)
        (frame,) = decode_frames(encode(kind(3, 2, 10, w), sequence=0), max_payload=4096)
        chunk = frame.message()
        assert isinstance(chunk, kind)
        assert (chunk.tensor, chunk.offset, chunk.count, chunk.total) == (3, 2, 7, 10)
        np.testing.assert_array_equal(chunk.data, w)


def test_error_reason_is_cut_to_200_bytes_on_a_character_boundary() -> None:
    payload = ErrorMessage(ErrorCode.INTERNAL, "\u00e9" * 150).pack()  # 2 bytes per character
    assert len(payload) == 8 + 200
    assert ErrorMessage.unpack(payload).reason == "\u00e9" * 100


def test_packing_refuses_values_the_format_cannot_carry() -> None:
    with pytest.raises(ValueError):
        Hello(Role.COORDINATOR, 0, 1, 512, cluster="x" * 64).pack()
    with pytest.raises(ValueError):
        Hello(Role.COORDINATOR, 0, 1, 512, model_hash=b"short").pack()
    with pytest.raises(ValueError):
        Weights(0, 8, 10, np.zeros(3, np.float32)).pack()
    with pytest.raises(ValueError):
        Inputs(np.zeros(3, np.float32))


def test_unpack_raises_malformed_never_struct_or_value_errors() -> None:
    with pytest.raises(Malformed):
        Hello.unpack(b"\x01" * 10)
    with pytest.raises(Malformed):
        BatchBegin.unpack(BatchBegin(1, 1).pack()[:4] + b"\x07" + bytes(11))
    with pytest.raises(Malformed):
        Inputs.unpack(b"\x02\x00\x00\x00\x03\x00\x00\x00" + bytes(4))


def test_protocol_errors_are_nmcm_errors_with_codes() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_frames(b"XXXX" + bytes(40), max_payload=4096)
    assert isinstance(info.value, NmcmError)
    assert info.value.code is ErrorCode.BAD_MAGIC and info.value.kind == "bad_magic"


def test_payload_limit_is_the_biggest_frame_a_stage_receives() -> None:
    # first of two stages: 8 samples x 64 in, 10 out; receives INPUTS and GRADIENTS
    assert payload_limit(8, 64, 10, last=False) == 8 + 8 * 64 * 4
    # last stage: ACTIVATIONS of 64 and LABELS
    assert payload_limit(8, 64, 10, last=True) == 8 + 8 * 64 * 4
    # tiny stage: never below the minimum that ERROR and the fixed-only messages need
    assert payload_limit(1, 2, 2, last=False) == MIN_PAYLOAD_LIMIT
    assert max(FIXED_SIZE.values()) <= MIN_PAYLOAD_LIMIT
    assert FIXED_SIZE[MessageType.ERROR] + 200 <= MIN_PAYLOAD_LIMIT


def test_reader_refuses_too_large_frame_before_reading_its_payload() -> None:
    frame = encode(Inputs(np.zeros((1, 200), np.float32)), sequence=0)
    stream = io.BytesIO(frame)
    with pytest.raises(FrameTooLarge) as info:
        FrameReader(stream, max_payload=512).read()
    assert info.value.detail == 808
    assert stream.tell() == HEADER_SIZE


# --- sockets -------------------------------------------------------------------------------------


@pytest.fixture
def pair() -> Any:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_writer_numbers_frames_and_reader_checks_them_over_a_socket(pair: Any) -> None:
    a, b = pair
    writer = FrameWriter(a)
    assert writer.send(Hello(Role.UPSTREAM, 0, 2, 4096, cluster="c")) == 0
    assert writer.send(Activations(np.ones((2, 3), np.float32)), batch=4, micro_batch=1) == 1
    reader = FrameReader(b, max_payload=4096, timeout=2.0)
    first, second = reader.read(), reader.read()
    assert (first.type, second.type) == (MessageType.HELLO, MessageType.ACTIVATIONS)
    assert (second.header.sequence, second.header.batch, second.header.micro_batch) == (1, 4, 1)


def test_writer_refuses_frames_over_the_peer_limit(pair: Any) -> None:
    a, _ = pair
    writer = FrameWriter(a, peer_limit=512)
    with pytest.raises(FrameTooLarge):
        writer.send(Inputs(np.zeros((2, 100), np.float32)))
    assert writer.next_sequence == 0


def test_reader_times_out_on_a_stalled_frame(pair: Any) -> None:
    a, b = pair
    a.sendall(encode(Shutdown(), sequence=0)[:10])
    start = time.monotonic()
    with pytest.raises(ProtocolTimeout) as info:
        FrameReader(b, max_payload=4096, timeout=0.2).read()
    assert time.monotonic() - start < 2.0
    assert info.value.detail == 10  # inside a frame: the stream is broken


def test_reader_polls_with_timeout_zero_and_stays_usable(pair: Any) -> None:
    a, b = pair
    reader = FrameReader(b, max_payload=4096)
    with pytest.raises(ProtocolTimeout) as info:
        reader.read(timeout=0)
    assert info.value.detail == 0  # nothing consumed: the reader can go on
    a.sendall(encode(Shutdown(), sequence=0))
    time.sleep(0.05)
    assert reader.read(timeout=0).type is MessageType.SHUTDOWN


def test_reader_timeout_covers_a_slow_trickle(pair: Any) -> None:
    a, b = pair
    data = encode(Metrics(1.0, 1, 1), sequence=0)

    def trickle() -> None:
        for i in range(len(data)):
            time.sleep(0.02)
            try:
                a.sendall(data[i : i + 1])
            except OSError:
                return

    thread = threading.Thread(target=trickle)
    thread.start()
    start = time.monotonic()
    with pytest.raises(ProtocolTimeout):
        FrameReader(b, max_payload=4096, timeout=0.3).read()
    assert time.monotonic() - start < 1.0
    thread.join()


def test_reader_reports_clean_close_and_truncation(pair: Any) -> None:
    a, b = pair
    a.sendall(encode(Shutdown(), sequence=0) + encode(StatusRequest(), sequence=1)[:5])
    a.close()
    reader = FrameReader(b, max_payload=4096, timeout=1.0)
    assert reader.read().type is MessageType.SHUTDOWN
    with pytest.raises(ProtocolError) as info:
        reader.read()
    assert info.value.kind == "truncated"
    c, d = socket.socketpair()
    c.close()
    with pytest.raises(ConnectionClosed):
        FrameReader(d, max_payload=4096, timeout=1.0).read()
    d.close()


def test_expect_turns_error_frames_into_remote_errors() -> None:
    error = encode(ErrorMessage(ErrorCode.MODEL_MISMATCH, "other model", 3), sequence=0)
    (frame,) = decode_frames(error, max_payload=4096)
    with pytest.raises(RemoteError) as info:
        expect(frame, MessageType.HELLO_ACK)
    assert info.value.code is ErrorCode.MODEL_MISMATCH
    assert info.value.reason == "other model" and info.value.detail == 3
    (ack,) = decode_frames(encode(Ack(MessageType.STEP, 0), sequence=0), max_payload=4096)
    with pytest.raises(UnexpectedMessage):
        expect(ack, MessageType.HELLO_ACK)
    assert expect(ack, MessageType.ACK) == Ack(MessageType.STEP, 0)


def test_eval_flag_travels_in_the_header() -> None:
    (frame,) = decode_frames(
        encode(Inputs(np.zeros((1, 1), np.float32)), sequence=0, flags=Flags.EVAL),
        max_payload=4096,
    )
    assert frame.header.flags is Flags.EVAL
