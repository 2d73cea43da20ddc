"""nmcm-train loads what the model compiler writes and refuses damaged or mismatched blobs and
jobs with a message and exit code 1, never a crash. Uses the sanitized build (build/host, ASan +
UBSan) when it has been configured, as `make test` does; the C++ unit tests fuzz the loader at
length, this is the end-to-end check with the real writer."""

from __future__ import annotations

import re
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nmcm_deploy.compiler.blob import read_blob
from nmcm_deploy.compiler.inline import inline_ir
from nmcm_deploy.runtime import host_trainer
from nmcm_deploy.runtime.host_trainer import HostTrainerError, Job
from tests.engine_helpers import DIGITS_CNN, stage_blob, torch_model

SANITIZED_BUILD = host_trainer.REPO / "build" / "host"
STAGES = ((0, 2), (3, 4), (5, 5))  # the digits CNN over three nodes


@pytest.fixture(scope="module")
def binary() -> Path:
    if (SANITIZED_BUILD / "CMakeCache.txt").exists():
        return host_trainer.trainer_binary(SANITIZED_BUILD)
    return host_trainer.trainer_binary()


def cnn_blob(stage: int, *, momentum: bool = True) -> bytes:
    ir = inline_ir([1, 8, 8], DIGITS_CNN)
    first, last = STAGES[stage]
    return stage_blob(
        ir,
        torch_model(ir, 0),
        first=first,
        last=last,
        stage_index=stage,
        stage_count=len(STAGES),
        micro_batch=4,
        slots=2,
        momentum=momentum,
    )


def reseal(blob: bytes | bytearray) -> bytes:
    body = bytes(blob[:-4])
    return body + struct.pack("<I", zlib.crc32(body))


def refused(binary: Path, blob: bytes, **options: Any) -> str:
    with pytest.raises(HostTrainerError) as error:
        host_trainer.check(blob, binary=binary, **options)
    return str(error.value)


def test_accepts_every_stage_the_compiler_writes(binary: Path) -> None:
    ir = inline_ir([1, 8, 8], DIGITS_CNN)
    for stage in range(len(STAGES)):
        blob = cnn_blob(stage)
        summary = host_trainer.check(
            blob, binary=binary, expect_stage=(stage, 3), expect_hash=ir.model_hash()
        )
        plan = read_blob(blob).plan
        assert summary["stage_index"] == stage and summary["stage_count"] == 3
        assert summary["arena_size"] == plan.arena_bytes
        assert summary["slots"] == 2 and summary["micro_batch"] == 4


def test_refuses_truncated_blobs(binary: Path) -> None:
    blob = cnn_blob(0)
    for length in (0, 10, 67, len(blob) // 2, len(blob) - 1):
        assert "shorter" in refused(binary, blob[:length])


def test_refuses_flipped_bits(binary: Path) -> None:
    blob = bytearray(cnn_blob(1))
    for bit in (8 * 70 + 3, 8 * (len(blob) - 100), 8 * (len(blob) - 2) + 7):
        damaged = bytearray(blob)
        damaged[bit // 8] ^= 1 << (bit % 8)
        assert "CRC mismatch" in refused(binary, bytes(damaged))


def test_refuses_a_newer_format_version(binary: Path) -> None:
    blob = bytearray(cnn_blob(0))
    struct.pack_into("<H", blob, 4, 2)
    assert "newer than this firmware reads" in refused(binary, reseal(blob))


def test_refuses_a_blob_for_another_stage_or_model(binary: Path) -> None:
    ir = inline_ir([1, 8, 8], DIGITS_CNN)
    blob = cnn_blob(1)
    message = refused(binary, blob, expect_stage=(0, 3), expect_hash=ir.model_hash())
    assert "different stage" in message
    other = bytes(16)
    assert "different model" in refused(binary, blob, expect_stage=(1, 3), expect_hash=other)


def test_refuses_a_stage_larger_than_the_nodes_arena(binary: Path) -> None:
    blob = cnn_blob(0)
    arena = read_blob(blob).plan.arena_bytes
    host_trainer.check(blob, binary=binary, arena_capacity=arena)
    assert "larger arena" in refused(binary, blob, arena_capacity=arena - 1)


def test_refuses_structural_damage_naming_the_record(binary: Path) -> None:
    blob = bytearray(cnn_blob(0))
    blob[64 + 48 * 1] = 9  # layer 1: unknown kind
    assert "layer 1: unknown layer kind" in refused(binary, reseal(blob))


def test_short_fuzz_never_crashes(binary: Path, tmp_path: Path) -> None:
    """Random damage re-sealed with a valid CRC: every run ends in exit 0 (accepted) or exit 1
    with a message; a signal (crash, sanitizer report) would show as another exit code."""
    clean = cnn_blob(2)
    data_offset = struct.unpack_from("<I", clean, 44)[0]
    rng = np.random.default_rng(7)
    codes = set()
    for _ in range(40):
        blob = bytearray(clean)
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, data_offset - 4))
            blob[at : at + 2] = rng.integers(0, 256, size=2, dtype=np.uint8).tobytes()
        path = tmp_path / "fuzz.blob"
        path.write_bytes(reseal(blob))
        proc = subprocess.run([str(binary), "check", "--blob", str(path)], capture_output=True)
        assert proc.returncode in (0, 1), proc.stderr.decode()
        if proc.returncode == 1:
            assert proc.stderr.startswith(b"nmcm-train: blob refused: ")
        codes.add(proc.returncode)
    assert 1 in codes


def whole_cnn_job(options: dict[str, object] | None = None, n: int = 8) -> tuple[bytes, Job]:
    ir = inline_ir([1, 8, 8], DIGITS_CNN)
    blob = stage_blob(ir, torch_model(ir, 0), micro_batch=4, momentum=False)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, size=n).astype(np.int32)
    fields: dict[str, Any] = {"x": x, "y": y, "steps": [np.arange(n)], "lr": 0.1}
    fields.update(options or {})
    return blob, Job(**fields)


def test_trained_blob_is_the_same_blob_with_new_weights(binary: Path) -> None:
    blob, job = whole_cnn_job()
    result = host_trainer.train(blob, job, binary=binary)
    before, after = read_blob(blob), read_blob(result.blob)
    assert len(result.blob) == len(blob)
    assert after.layers == before.layers and after.plan == before.plan
    assert all(not np.array_equal(a, b) for a, b in zip(after.weights, before.weights, strict=True))
    host_trainer.check(result.blob, binary=binary)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"momentum": 0.9}, "momentum needs a blob planned with momentum"),
        ({"micro_batch": 8}, "larger than the blob's planned 4"),
        ({"y": np.full(8, 10, np.int32)}, "label outside [0, classes)"),
        ({"x": np.zeros((8, 3, 8, 8), np.float32)}, "job samples have 192 floats"),
    ],
)
def test_refuses_jobs_that_do_not_fit(
    binary: Path, options: dict[str, object], message: str
) -> None:
    blob, job = whole_cnn_job(options)
    with pytest.raises(HostTrainerError, match=re.escape(message)):
        host_trainer.train(blob, job, binary=binary)


def test_training_needs_a_whole_model(binary: Path) -> None:
    _, job = whole_cnn_job()
    with pytest.raises(HostTrainerError, match="whole-model blob"):
        host_trainer.train(cnn_blob(0), job, binary=binary)


def test_golden_blobs_of_the_cpp_tests_are_valid() -> None:
    """firmware/tests/data/*.blob (make_golden_blobs.py) must stay blobs the compiler's reader
    accepts; regenerate them if the format changes."""
    golden = sorted((host_trainer.FIRMWARE / "tests" / "data").glob("*.blob"))
    assert len(golden) == 4
    for path in golden:
        read_blob(path.read_bytes())
