"""Blob writer/reader round trips and rejection of damaged blobs (docs/blob-format.md)."""

from __future__ import annotations

import contextlib
import struct
import zlib

import numpy as np
import pytest

from nmcm_deploy.compiler.blob import HEADER, read_blob, write_blob
from nmcm_deploy.compiler.inline import inline_ir
from nmcm_deploy.compiler.memory import plan_stage
from nmcm_deploy.errors import BlobError
from tests.test_compiler_memory import DIGITS_CNN


def make_blob(stage: int = 1) -> tuple[bytes, list[np.ndarray]]:
    ir = inline_ir([1, 8, 8], DIGITS_CNN)
    first, last = ((0, 3), (4, 5))[stage]
    plan = plan_stage(
        ir, first, last, micro_batch=8, slots=2, momentum=True, stage_index=stage, stage_count=2
    )
    rng = np.random.default_rng(0)
    weights = [rng.standard_normal(t.shape).astype(np.float32) for t in plan.tensors]
    layers = ir.layers[first : last + 1]
    blob = write_blob(layers, tuple(range(first, last + 1)), plan, weights, ir.model_hash())
    return blob, weights


def test_round_trip_keeps_everything() -> None:
    ir = inline_ir([1, 8, 8], DIGITS_CNN)
    for stage in (0, 1):
        blob, weights = make_blob(stage)
        decoded = read_blob(blob)
        first, last = ((0, 3), (4, 5))[stage]
        assert decoded.stage_index == stage and decoded.stage_count == 2
        assert decoded.model_hash == ir.model_hash()
        assert decoded.layers == ir.layers[first : last + 1]
        assert decoded.model_indices == tuple(range(first, last + 1))
        original = plan_stage(
            ir, first, last, micro_batch=8, slots=2, momentum=True, stage_index=stage, stage_count=2
        )
        assert decoded.plan == original
        for got, want in zip(decoded.weights, weights, strict=True):
            assert np.array_equal(got, want)
        assert len(blob) % 4 == 0


def test_layout_matches_the_spec() -> None:
    blob, _ = make_blob()
    assert blob[:4] == b"NMCB"
    version, header_size, total = struct.unpack_from("<HHI", blob, 4)
    assert (version, header_size, total) == (1, 64, len(blob))
    data_offset = struct.unpack_from("<I", blob, 44)[0]
    assert data_offset % 16 == 0
    assert struct.unpack_from("<I", blob, len(blob) - 4)[0] == zlib.crc32(blob[:-4])


def _recrc(blob: bytearray) -> bytes:
    struct.pack_into("<I", blob, len(blob) - 4, zlib.crc32(bytes(blob[:-4])))
    return bytes(blob)


def test_damaged_blobs_are_refused() -> None:
    blob, _ = make_blob()
    with pytest.raises(BlobError, match="shorter than a header"):
        read_blob(blob[:40])
    with pytest.raises(BlobError, match="were given"):
        read_blob(blob[:-8])
    flipped = bytearray(blob)
    flipped[200] ^= 0x10
    with pytest.raises(BlobError, match="CRC"):
        read_blob(bytes(flipped))
    newer = bytearray(blob)
    struct.pack_into("<H", newer, 4, 2)
    with pytest.raises(BlobError, match="version 2 is not supported"):
        read_blob(_recrc(newer))
    bad_magic = bytearray(blob)
    bad_magic[0:4] = b"ELF\x7f"
    with pytest.raises(BlobError, match="not a stage blob"):
        read_blob(_recrc(bad_magic))
    bad_kind = bytearray(blob)
    bad_kind[HEADER.size] = 99
    with pytest.raises(BlobError, match="unknown kind 99"):
        read_blob(_recrc(bad_kind))


def test_random_corruption_never_escapes_as_another_exception() -> None:
    blob, _ = make_blob()
    rng = np.random.default_rng(1)
    for _ in range(300):
        damaged = bytearray(blob)
        for _ in range(int(rng.integers(1, 4))):
            damaged[int(rng.integers(0, len(blob)))] = int(rng.integers(0, 256))
        if rng.random() < 0.5:
            damaged = bytearray(_recrc(damaged))
        # Either the damage is caught by a check, or it only touched weight values (then the
        # CRC was recomputed and the blob decodes); anything else escaping is a bug.
        with contextlib.suppress(BlobError):
            read_blob(bytes(damaged))
