"""Writes the protocol test vectors: frames as .bin files, vectors.json and vectors.txt.

    .venv/bin/python tests/vectors/protocol/generate.py

Frames are packed here with struct and zlib straight from the tables of docs/protocol.md, not with
nmcm_deploy.protocol: the vectors check the codecs, so they must not be made by one. Each vector
names the receive limit to decode it with and either the frames it holds (header fields, the CRC of
the data part, the fixed-part fields) or the error the decoder must report after those frames.
Outputs are committed; tests/test_protocol.py checks that running this again changes nothing.
"""

from __future__ import annotations

import json
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MAGIC = b"NMCP"
LIMIT = 4096  # receive limit used unless a vector says otherwise

# type codes (docs/protocol.md, "Message types")
HELLO, HELLO_ACK, ERROR, ACK, SHUTDOWN, STATUS_REQUEST, STATUS = 1, 2, 3, 4, 5, 6, 7
BATCH_BEGIN, INPUTS, LABELS, ACTIVATIONS, GRADIENTS, METRICS, STEP = 16, 17, 18, 19, 20, 21, 22
GET_WEIGHTS, WEIGHTS, SET_WEIGHTS = 32, 33, 34
EVAL = 1

MODEL_HASH = bytes(range(0x10, 0x20))
FIRMWARE_HASH = bytes(range(0xA0, 0xB0))


def f32(x: float) -> float:
    """x rounded to float32, as the receiver will see it."""
    return float(struct.unpack("<f", struct.pack("<f", x))[0])


def f32_bits(x: float) -> str:
    return f"0x{struct.unpack('<I', struct.pack('<f', x))[0]:08x}"


def header(
    type_: int,
    length: int,
    *,
    sequence: int = 0,
    flags: int = 0,
    batch: int = 0,
    micro_batch: int = 0,
    magic: bytes = MAGIC,
    version: int = 1,
    reserved: int = 0,
    header_crc_xor: int = 0,
) -> bytes:
    fields = struct.pack(
        "<4sBBHIIHHI", magic, version, type_, flags, sequence, batch, micro_batch, reserved, length
    )
    return fields + struct.pack("<I", zlib.crc32(fields) ^ header_crc_xor)


def frame(
    type_: int, payload: bytes, *, length: int | None = None, crc_xor: int = 0, **kw: Any
) -> bytes:
    head = header(type_, len(payload) if length is None else length, **kw)
    crc = zlib.crc32(payload, zlib.crc32(head)) ^ crc_xor
    return head + payload + struct.pack("<I", crc)


@dataclass
class Expected:
    """One frame a decoder must produce."""

    type_: int
    payload: bytes
    fixed_size: int
    fields: dict[str, Any]  # fixed-part fields: ints, f32 floats, hex strings
    data_fields: dict[str, Any] = field(default_factory=dict)  # decoded data part (JSON only)
    sequence: int = 0
    flags: int = 0
    batch: int = 0
    micro_batch: int = 0
    float_fields: tuple[str, ...] = ()

    def bytes(self) -> bytes:
        return frame(
            self.type_,
            self.payload,
            sequence=self.sequence,
            flags=self.flags,
            batch=self.batch,
            micro_batch=self.micro_batch,
        )

    def as_json(self) -> dict[str, Any]:
        data = self.payload[self.fixed_size :]
        return {
            "type": self.type_,
            "flags": self.flags,
            "sequence": self.sequence,
            "batch": self.batch,
            "micro_batch": self.micro_batch,
            "payload_length": len(self.payload),
            "data_length": len(data),
            "data_crc32": zlib.crc32(data),
            "fields": {**self.fields, **self.data_fields},
        }

    def as_line(self) -> str:
        data = self.payload[self.fixed_size :]
        tokens = [
            "frame",
            str(self.type_),
            str(self.flags),
            str(self.sequence),
            str(self.batch),
            str(self.micro_batch),
            str(len(self.payload)),
            str(len(data)),
            f"0x{zlib.crc32(data):08x}",
        ]
        for key, value in self.fields.items():
            text = f32_bits(value) if key in self.float_fields else str(value)
            tokens.append(f"{key}={text}")
        return " ".join(tokens)


# --- payload builders: one per layout table of docs/protocol.md ----------------------------------


def identity(type_: int, **over: Any) -> Expected:
    v: dict[str, Any] = {
        "role": 1,
        "stage_index": 1,
        "stage_count": 2,
        "micro_batch": 0,
        "max_payload": 65536,
        "input_features": 0,
        "output_features": 0,
        "slots": 0,
        "tensor_count": 0,
        "model_hash": MODEL_HASH.hex(),
        "firmware_hash": bytes(16).hex(),
        "cluster": "digits-f413-h7a3",
    }
    v.update(over)
    payload = struct.pack(
        "<BBHHHIIIHHII16s16s64s",
        v["role"],
        0,
        v["stage_index"],
        v["stage_count"],
        v["micro_batch"],
        v["max_payload"],
        v["input_features"],
        v["output_features"],
        v["slots"],
        v["tensor_count"],
        0,
        0,
        bytes.fromhex(v["model_hash"]),
        bytes.fromhex(v["firmware_hash"]),
        v["cluster"].encode("ascii"),
    )
    return Expected(type_, payload, 128, v)


def error(code: int, reason: bytes, detail: int = 0) -> Expected:
    payload = struct.pack("<HHI", code, 0, detail) + reason
    return Expected(
        ERROR, payload, 8, {"code": code, "detail": detail}, {"reason": reason.decode("utf-8")}
    )


def ack(acked_type: int, acked_sequence: int, **kw: Any) -> Expected:
    payload = struct.pack("<BBHI", acked_type, 0, 0, acked_sequence)
    return Expected(
        ACK, payload, 8, {"acked_type": acked_type, "acked_sequence": acked_sequence}, **kw
    )


def status() -> Expected:
    v: dict[str, Any] = {
        "stage_index": 1,
        "stage_count": 2,
        "state": 1,
        "steps": 41,
        "batch": 42,
        "last_loss": f32(0.6931472),
        "arena_used": 12288,
        "arena_capacity": 16384,
        "tick_hz": 1_000_000_000,
        "compute_ticks": 123_456_789_012,
        "comm_ticks": 2_345_678,
        "idle_ticks": 34_567,
        "bytes_sent": 1 << 33,
        "bytes_received": 987_654_321,
        "frames_sent": 100,
        "frames_received": 99,
        "frames_rejected": 1,
        "uptime_ms": 3_600_000,
        "model_hash": MODEL_HASH.hex(),
        "firmware_hash": FIRMWARE_HASH.hex(),
    }
    payload = struct.pack(
        "<HHBBHIIfIIIQQQQQIIIIII16s16s",
        v["stage_index"],
        v["stage_count"],
        v["state"],
        0,
        0,
        v["steps"],
        v["batch"],
        v["last_loss"],
        v["arena_used"],
        v["arena_capacity"],
        v["tick_hz"],
        v["compute_ticks"],
        v["comm_ticks"],
        v["idle_ticks"],
        v["bytes_sent"],
        v["bytes_received"],
        v["frames_sent"],
        v["frames_received"],
        v["frames_rejected"],
        v["uptime_ms"],
        0,
        0,
        MODEL_HASH,
        FIRMWARE_HASH,
    )
    return Expected(STATUS, payload, 128, v, float_fields=("last_loss",))


def batch_begin(size: int, count: int, mode: int, loss: int, epoch: int, **kw: Any) -> Expected:
    payload = struct.pack("<HHBBHII", size, count, mode, loss, 0, epoch, 0)
    fields = {
        "batch_size": size,
        "micro_batches": count,
        "mode": mode,
        "loss": loss,
        "epoch": epoch,
    }
    return Expected(BATCH_BEGIN, payload, 16, fields, **kw)


def tensor(type_: int, rows: list[list[float]], **kw: Any) -> Expected:
    samples, features = len(rows), len(rows[0])
    flat = [f32(x) for row in rows for x in row]
    payload = struct.pack("<HHI", samples, 0, features) + struct.pack(f"<{len(flat)}f", *flat)
    data = {"data": [flat[i * features : (i + 1) * features] for i in range(samples)]}
    return Expected(type_, payload, 8, {"samples": samples, "features": features}, data, **kw)


def labels(ids: list[int], **kw: Any) -> Expected:
    payload = struct.pack("<HH", len(ids), 0) + struct.pack(f"<{len(ids)}i", *ids)
    return Expected(LABELS, payload, 4, {"samples": len(ids)}, {"labels": ids}, **kw)


def metrics(loss_sum: float, correct: int, samples: int, **kw: Any) -> Expected:
    payload = struct.pack("<fIII", loss_sum, correct, samples, 0)
    fields = {"loss_sum": f32(loss_sum), "correct": correct, "samples": samples}
    return Expected(METRICS, payload, 16, fields, float_fields=("loss_sum",), **kw)


def step(lr: float, momentum: float, weight_decay: float, **kw: Any) -> Expected:
    payload = struct.pack("<fffI", lr, momentum, weight_decay, 0)
    fields = {"lr": f32(lr), "momentum": f32(momentum), "weight_decay": f32(weight_decay)}
    return Expected(
        STEP, payload, 16, fields, float_fields=("lr", "momentum", "weight_decay"), **kw
    )


def get_weights(tensor_: int, kind: int, offset: int, count: int) -> Expected:
    payload = struct.pack("<HBBIII", tensor_, kind, 0, offset, count, 0)
    fields = {"tensor": tensor_, "kind": kind, "offset": offset, "count": count}
    return Expected(GET_WEIGHTS, payload, 16, fields)


def chunk(
    type_: int, tensor_: int, kind: int, offset: int, total: int, values: list[float]
) -> Expected:
    flat = [f32(x) for x in values]
    payload = struct.pack("<HBBIII", tensor_, kind, 0, offset, len(flat), total)
    payload += struct.pack(f"<{len(flat)}f", *flat)
    fields = {"tensor": tensor_, "kind": kind, "offset": offset, "count": len(flat), "total": total}
    return Expected(type_, payload, 16, fields, {"data": flat})


# --- the vectors ----------------------------------------------------------------------------------


@dataclass
class Vector:
    name: str
    description: str
    data: bytes
    frames: list[Expected]
    error: str | None = None  # kind: "bad_magic", ..., "truncated"
    max_payload: int = LIMIT
    check_sequence: bool = True


def valid(name: str, description: str, *frames: Expected, max_payload: int = LIMIT) -> Vector:
    for i, f in enumerate(frames):
        f.sequence = i
    return Vector(
        name, description, b"".join(f.bytes() for f in frames), list(frames), None, max_payload
    )


def invalid(
    name: str,
    description: str,
    data: bytes,
    error: str,
    *,
    max_payload: int = LIMIT,
    before: tuple[Expected, ...] = (),
) -> Vector:
    prefix = b"".join(f.bytes() for f in before)
    return Vector(name, description, prefix + data, list(before), error, max_payload)


def vectors() -> list[Vector]:
    rows = [[0.5, -1.25, 3.0], [1e-3, 65504.0, -0.0]]
    inputs = tensor(INPUTS, rows, batch=3, micro_batch=1)
    weights_range = struct.pack("<HBBIII", 2, 0, 0, 8, 3, 10) + struct.pack("<3f", 1, 2, 3)
    out: list[Vector] = [
        valid("hello", "coordinator HELLO to stage 1", identity(HELLO)),
        valid(
            "hello_ack",
            "a node's identity in HELLO_ACK",
            identity(
                HELLO_ACK,
                role=3,
                micro_batch=8,
                max_payload=2056,
                input_features=64,
                output_features=10,
                slots=2,
                tensor_count=2,
                firmware_hash=FIRMWARE_HASH.hex(),
            ),
        ),
        valid(
            "hello_observer",
            "a status probe: observer role, stage 0xFFFF, empty cluster",
            identity(
                HELLO,
                role=4,
                stage_index=0xFFFF,
                stage_count=0,
                model_hash=bytes(16).hex(),
                cluster="",
            ),
        ),
        valid(
            "error", "ERROR with a detail and a reason", error(5, b"payload of 9000 bytes", 9000)
        ),
        valid(
            "error_utf8", "ERROR reason in UTF-8", error(14, "features 64 \u2260 63".encode(), 64)
        ),
        valid("error_empty", "ERROR with no reason text", error(11, b"")),
        valid("ack", "ACK of a STEP, repeating its batch", ack(STEP, 5, batch=3)),
        valid("shutdown", "SHUTDOWN has no payload", Expected(SHUTDOWN, b"", 0, {})),
        valid(
            "status_request", "STATUS_REQUEST has no payload", Expected(STATUS_REQUEST, b"", 0, {})
        ),
        valid("status", "a full STATUS report", status()),
        valid("batch_begin", "training batch: B=16 in M=2", batch_begin(16, 2, 0, 0, 1, batch=3)),
        valid(
            "batch_begin_eval",
            "evaluation batch with MSE loss and the EVAL flag",
            batch_begin(10, 1, 1, 1, 4, batch=9, flags=EVAL),
        ),
        valid("inputs", "2 samples x 3 features", inputs),
        valid(
            "inputs_eval",
            "INPUTS of an evaluation batch",
            tensor(INPUTS, [[1.0, 2.0]], batch=9, flags=EVAL),
        ),
        valid("labels", "three class ids", labels([0, 9, 3], batch=3, micro_batch=1)),
        valid(
            "activations",
            "ACTIVATIONS downstream",
            tensor(ACTIVATIONS, [[0.25] * 4, [-2.0] * 4, [7.5] * 4], batch=3, micro_batch=1),
        ),
        valid(
            "gradients",
            "GRADIENTS upstream",
            tensor(GRADIENTS, [[-0.125, 0.0625]], batch=3, micro_batch=1),
        ),
        valid("metrics", "a micro-batch's loss sum", metrics(5.5451775, 3, 8, batch=3)),
        valid("step", "SGD with momentum and weight decay", step(0.05, 0.9, 1e-4, batch=3)),
        valid("get_weights", "ask for 100 elements of tensor 1", get_weights(1, 0, 0, 100)),
        valid(
            "weights",
            "a 3-element chunk of a 10-element tensor",
            chunk(WEIGHTS, 1, 0, 4, 10, [0.1, -0.2, 0.3]),
        ),
        valid(
            "set_weights_momentum",
            "SET_WEIGHTS of a momentum buffer, whole tensor",
            chunk(SET_WEIGHTS, 0, 1, 0, 2, [1.5, -1.5]),
        ),
        valid(
            "at_limit",
            "payload exactly at the receive limit (8 + 128 floats = 520)",
            tensor(ACTIVATIONS, [[float(i) for i in range(64)], [float(-i) for i in range(64)]]),
            max_payload=520,
        ),
        valid(
            "stream",
            "one batch's frames on the coordinator connection, numbered 0..4",
            identity(HELLO),
            batch_begin(4, 1, 0, 0, 0, batch=1),
            tensor(INPUTS, [[1.0], [2.0], [3.0], [4.0]], batch=1),
            labels([1, 0, 1, 0], batch=1),
            step(0.1, 0.0, 0.0, batch=1),
        ),
    ]
    good = inputs.bytes()
    out += [
        invalid(
            "bad_magic", "magic NMCQ", frame(INPUTS, inputs.payload, magic=b"NMCQ"), "bad_magic"
        ),
        invalid(
            "bad_magic_http",
            "an HTTP request: refused after 4 bytes",
            b"GET / HTTP/1.1\r\n\r\n",
            "bad_magic",
        ),
        invalid(
            "bad_version", "version 2", frame(INPUTS, inputs.payload, version=2), "bad_version"
        ),
        invalid(
            "bad_header_crc",
            "header CRC off by one bit",
            frame(INPUTS, inputs.payload, header_crc_xor=1),
            "bad_header",
        ),
        invalid(
            "bad_header_reserved",
            "reserved header field set (header CRC valid)",
            frame(INPUTS, inputs.payload, reserved=1),
            "bad_header",
        ),
        invalid(
            "bad_header_flags",
            "unknown flag bit 15",
            frame(INPUTS, inputs.payload, flags=0x8000),
            "bad_header",
        ),
        invalid("unknown_type", "type 0x7f", frame(0x7F, b""), "unknown_type"),
        invalid("unknown_type_zero", "type 0 is never valid", frame(0, b""), "unknown_type"),
        invalid(
            "too_large",
            "payload of 520 bytes, one over the limit of 519",
            tensor(ACTIVATIONS, [[0.0] * 128]).bytes(),
            "too_large",
            max_payload=519,
        ),
        invalid(
            "too_large_huge",
            "payload_length 0xFFFFFFFF, only the header sent: refused, not waited for",
            header(INPUTS, 0xFFFFFFFF),
            "too_large",
        ),
        invalid(
            "malformed_short",
            "INPUTS payload shorter than its fixed part",
            frame(INPUTS, b"\1\0\0\0"),
            "malformed",
        ),
        invalid(
            "malformed_fixed_only",
            "STEP with 4 bytes too many",
            frame(STEP, step(0.1, 0, 0).payload + b"\0\0\0\0"),
            "malformed",
        ),
        invalid(
            "malformed_tensor_size",
            "2 x 3 floats announced, 20 bytes of data",
            frame(INPUTS, struct.pack("<HHI", 2, 0, 3) + bytes(20)),
            "malformed",
        ),
        invalid(
            "malformed_zero_samples",
            "ACTIVATIONS of 0 samples",
            frame(ACTIVATIONS, struct.pack("<HHI", 0, 0, 3)),
            "malformed",
        ),
        invalid(
            "malformed_labels_size",
            "3 labels announced, 2 sent",
            frame(LABELS, struct.pack("<HHii", 3, 0, 1, 2)),
            "malformed",
        ),
        invalid(
            "malformed_weights_range",
            "chunk [8, +3) of a 10-element tensor",
            frame(SET_WEIGHTS, weights_range),
            "malformed",
        ),
        invalid(
            "malformed_weights_kind",
            "tensor kind 3",
            frame(WEIGHTS, struct.pack("<HBBIII", 0, 3, 0, 0, 1, 1) + bytes(4)),
            "malformed",
        ),
        invalid(
            "malformed_get_weights_zero",
            "GET_WEIGHTS of 0 elements",
            frame(GET_WEIGHTS, struct.pack("<HBBIII", 0, 0, 0, 0, 0, 0)),
            "malformed",
        ),
        invalid(
            "malformed_role",
            "HELLO with role 9",
            frame(HELLO, identity(HELLO, role=9).payload),
            "malformed",
        ),
        invalid(
            "malformed_mode",
            "BATCH_BEGIN with mode 2",
            frame(BATCH_BEGIN, batch_begin(4, 1, 2, 0, 0).payload),
            "malformed",
        ),
        invalid(
            "malformed_state",
            "STATUS with state 4",
            frame(STATUS, status().payload[:4] + b"\4" + status().payload[5:]),
            "malformed",
        ),
        invalid(
            "malformed_error_text",
            "ERROR reason of 201 bytes",
            frame(ERROR, struct.pack("<HHI", 6, 0, 0) + b"x" * 201),
            "malformed",
        ),
        invalid(
            "malformed_error_code",
            "ERROR code 99",
            frame(ERROR, struct.pack("<HHI", 99, 0, 0)),
            "malformed",
        ),
        invalid(
            "malformed_ack_type",
            "ACK of type 0x7f",
            frame(ACK, struct.pack("<BBHI", 0x7F, 0, 0, 0)),
            "malformed",
        ),
        invalid(
            "bad_crc",
            "frame CRC off by one bit",
            frame(INPUTS, inputs.payload, crc_xor=0x80000000),
            "bad_crc",
        ),
        invalid(
            "bad_crc_payload",
            "one data bit flipped in transit",
            good[:40] + bytes([good[40] ^ 4]) + good[41:],
            "bad_crc",
        ),
        invalid("truncated_header", "stream ends 10 bytes into a header", good[:10], "truncated"),
        invalid("truncated_fixed", "stream ends inside the fixed part", good[:32], "truncated"),
        invalid("truncated_data", "stream ends inside the data part", good[:-9], "truncated"),
        invalid("truncated_crc", "stream ends inside the CRC", good[:-2], "truncated"),
        invalid(
            "sequence_start", "first frame numbered 5", frame(SHUTDOWN, b"", sequence=5), "sequence"
        ),
        invalid(
            "sequence_gap",
            "frame 0, then frame 2",
            frame(SHUTDOWN, b"", sequence=2),
            "sequence",
            before=(Expected(STATUS_REQUEST, b"", 0, {}),),
        ),
        invalid(
            "valid_then_bad",
            "a good frame, then garbage",
            b"\0" * 40,
            "bad_magic",
            before=(ack(INPUTS, 7, batch=3, micro_batch=1),),
        ),
    ]
    return out


def build() -> dict[str, bytes]:
    """Every output file: name -> content."""
    files: dict[str, bytes] = {}
    index: list[dict[str, Any]] = []
    lines = [
        "# nmcm protocol vectors for the C++ test (written by generate.py; see vectors.json)",
        "# vector <name> <file> <max_payload> <check_sequence> <error kind | ok>",
        "# frame <type> <flags> <sequence> <batch> <micro_batch> <payload_length> <data_length>"
        " <data_crc32> <fixed-part field=value ...; floats as float32 bits>",
    ]
    names = [v.name for v in vectors()]
    assert len(set(names)) == len(names), "vector names must be unique"
    for v in vectors():
        file = f"{v.name}.bin"
        files[file] = v.data
        index.append(
            {
                "name": v.name,
                "description": v.description,
                "file": file,
                "max_payload": v.max_payload,
                "check_sequence": v.check_sequence,
                "frames": [f.as_json() for f in v.frames],
                "error": v.error,
            }
        )
        lines.append(
            f"vector {v.name} {file} {v.max_payload} {int(v.check_sequence)} {v.error or 'ok'}"
        )
        lines += [f.as_line() for f in v.frames]
        lines.append("end")
    doc = {"format_version": 1, "protocol_version": 1, "vectors": index}
    files["vectors.json"] = (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode()
    files["vectors.txt"] = ("\n".join(lines) + "\n").encode()
    return files


def main() -> int:
    for stale in HERE.glob("*.bin"):
        stale.unlink()
    files = build()
    for name, content in files.items():
        (HERE / name).write_bytes(content)
    print(f"wrote {len(files)} files to {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
