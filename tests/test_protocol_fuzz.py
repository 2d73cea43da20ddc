"""Property tests of the Python frame reader: random and mutated byte streams never raise anything
but ProtocolError, never hang, and every frame the reader accepts decodes into its message."""

from __future__ import annotations

import io
import random
import socket
import struct
import time
import zlib
from pathlib import Path

from nmcm_deploy.protocol import (
    FrameReader,
    MessageType,
    ProtocolError,
)
from nmcm_deploy.protocol.spec import FIXED_SIZE, HAS_DATA

VECTORS = Path(__file__).resolve().parent / "vectors" / "protocol"
SEEDS = range(4)


def _drain(data: bytes, max_payload: int) -> int:
    """Reads every frame of `data`; returns how many were accepted. Any exception but
    ProtocolError propagates and fails the test; so does an accepted frame that does not decode."""
    reader = FrameReader(io.BytesIO(data), max_payload=max_payload, check_sequence=False)
    # each read consumes at least one byte, so a finite stream ends within len(data) + 1 reads
    for accepted in range(len(data) + 1):
        try:
            frame = reader.read()
        except ProtocolError:  # ConnectionClosed at the end of the stream is one too
            return accepted
        frame.message()
    raise AssertionError("reader did not finish a finite stream")


def _valid_frames() -> list[bytes]:
    return [p.read_bytes() for p in sorted(VECTORS.glob("*.bin"))]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and b:  # flip a bit
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # cut
            del b[rng.randrange(len(b)) :]
        elif op == 2:  # insert random bytes
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 3 and b:  # overwrite a byte
            b[rng.randrange(len(b))] = rng.randrange(256)
        else:  # duplicate a slice
            i = rng.randrange(len(b) + 1)
            b[i:i] = b[i : i + rng.randint(1, 40)]
    return bytes(b)


def _sealed(rng: random.Random) -> bytes:
    """A frame with valid CRCs, a known type and a random payload: gets past the header checks
    and exercises the fixed-part checks and the message decoders."""
    kind = rng.choice(list(MessageType))
    fixed = FIXED_SIZE[kind]
    length = fixed + (rng.randint(0, 64) if kind in HAS_DATA else 0)
    if rng.random() < 0.2:
        length = rng.randint(0, 200)
    payload = rng.randbytes(length)
    tensor = (MessageType.INPUTS, MessageType.ACTIVATIONS, MessageType.GRADIENTS)
    if kind in tensor and length >= 8 and rng.random() < 0.5:
        # a plausible size field, so that some random tensors are accepted
        n = (length - 8) // 4
        payload = struct.pack("<HHI", 1, 0, n) + payload[8 : 8 + 4 * n]
    fields = struct.pack("<4sBBHIIHHI", b"NMCP", 1, kind, 0, 0, 0, 0, 0, len(payload))
    head = fields + struct.pack("<I", zlib.crc32(fields))
    return head + payload + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head)))


def test_random_bytes_raise_only_protocol_errors() -> None:
    for seed in SEEDS:
        rng = random.Random(seed)
        for _ in range(500):
            data = rng.randbytes(rng.randint(0, 300))
            if rng.random() < 0.5:
                data = b"NMCP\x01" + data  # past the first two checks
            _drain(data, rng.choice([0, 16, 512, 4096]))


def test_mutated_vectors_raise_only_protocol_errors() -> None:
    frames = _valid_frames()
    for seed in SEEDS:
        rng = random.Random(100 + seed)
        for _ in range(800):
            data = b"".join(rng.choice(frames) for _ in range(rng.randint(1, 3)))
            _drain(_mutate(rng, data), rng.choice([64, 520, 4096]))


def test_sealed_random_payloads_decode_or_raise_protocol_errors() -> None:
    accepted = 0
    for seed in SEEDS:
        rng = random.Random(200 + seed)
        for _ in range(800):
            accepted += _drain(_sealed(rng), 4096)
    assert accepted > 0  # the generator reaches the message decoders, not only the checks


def test_stalled_or_closed_sockets_never_hang() -> None:
    frames = _valid_frames()
    rng = random.Random(7)
    start = time.monotonic()
    for _ in range(40):
        a, b = socket.socketpair()
        try:
            data = _mutate(rng, rng.choice(frames))
            a.sendall(data[: rng.randint(0, len(data))])
            if rng.random() < 0.5:
                a.close()
            reader = FrameReader(b, max_payload=4096, timeout=0.05, check_sequence=False)
            for _ in range(4):
                try:
                    reader.read()
                except ProtocolError:  # ProtocolTimeout when the stream stalls
                    break
        finally:
            a.close()
            b.close()
    # 40 stalls of at most 50 ms each, with slack for a slow machine
    assert time.monotonic() - start < 10.0
