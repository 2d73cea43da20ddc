"""Drive `nmcm-train`, the host build of the NMCM engine (firmware/apps/train).

Formats of the job, result and loss files: docs/host-trainer.md. The binary comes from the CMake
build directory in ``NMCM_HOST_BUILD`` if set, else from ``build/host-release`` (Release, no
sanitizers), configured on first use; each process runs ``cmake --build`` once, so edits to the
C++ sources are picked up incrementally.
"""

from __future__ import annotations

import functools
import json
import os
import struct
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmcm_deploy.compiler.blob import read_blob
from nmcm_deploy.errors import BuildError, NmcmError

REPO = Path(__file__).resolve().parents[2]
FIRMWARE = REPO / "firmware"
DEFAULT_BUILD = REPO / "build" / "host-release"
BINARY = "nmcm-train"

JOB_MAGIC = b"NMCJ"
JOB_VERSION = 1
JOB_HEADER = struct.Struct("<4sHHIIIIfffBBHII16x")
GRAD_HEADER = struct.Struct("<4sIIIIIfI")
FLAG_UPSTREAM_GRAD = 1
LOSS_CODES = {"cross_entropy": 0, "mse": 1}

assert JOB_HEADER.size == 64 and GRAD_HEADER.size == 32


class HostTrainerError(NmcmError):
    """nmcm-train refused its input or failed; the message is its own."""


@dataclass(frozen=True)
class Job:
    """What to run: data, the batch of every step (sample indices, in order) and hyper-parameters.

    ``upstream_grad`` is the gradient arriving from downstream, per sample, for a stage that is
    not the last (``grad`` mode only). ``micro_batch`` 0 means the blob's.
    """

    x: np.ndarray
    y: np.ndarray
    steps: Sequence[np.ndarray]
    lr: float = 0.0
    momentum: float = 0.0
    weight_decay: float = 0.0
    loss: str = "cross_entropy"
    micro_batch: int = 0
    upstream_grad: np.ndarray | None = None


@dataclass(frozen=True)
class TrainResult:
    blob: bytes  # the input blob with the trained weights, CRC re-sealed
    weights: tuple[np.ndarray, ...]  # in the blob's tensor order
    losses: np.ndarray  # batch-mean loss per step
    correct: np.ndarray  # samples whose arg-max was the label, per step
    seconds: float  # the training loop alone, timed inside nmcm-train


@dataclass(frozen=True)
class GradResult:
    outputs: np.ndarray  # [N, output floats] stage output per sample
    grad_input: np.ndarray | None  # [N, input floats] gradient sent upstream; None on stage 0
    grads: tuple[np.ndarray, ...]  # parameter gradients in tensor order, shaped
    loss_sum: float
    correct: int


def encode_job(job: Job) -> bytes:
    x = np.ascontiguousarray(job.x, dtype="<f4").reshape(len(job.x), -1)
    y = np.ascontiguousarray(job.y, dtype="<i4").reshape(-1)
    if len(y) != len(x):
        raise ValueError(f"{len(x)} samples but {len(y)} labels")
    if job.loss not in LOSS_CODES:
        raise ValueError(f"loss must be one of {sorted(LOSS_CODES)}, got {job.loss!r}")
    steps = [np.asarray(s, dtype="<u4").reshape(-1) for s in job.steps]
    grad = b""
    grad_floats = 0
    flags = 0
    if job.upstream_grad is not None:
        g = np.ascontiguousarray(job.upstream_grad, dtype="<f4").reshape(len(x), -1)
        grad, grad_floats, flags = g.tobytes(), g.shape[1], FLAG_UPSTREAM_GRAD
    header = JOB_HEADER.pack(
        JOB_MAGIC,
        JOB_VERSION,
        JOB_HEADER.size,
        len(x),
        x.shape[1],
        len(steps),
        sum(len(s) for s in steps),
        job.lr,
        job.momentum,
        job.weight_decay,
        LOSS_CODES[job.loss],
        flags,
        0,
        job.micro_batch,
        grad_floats,
    )
    sizes = np.array([len(s) for s in steps], dtype="<u4")
    order = np.concatenate(steps) if steps else np.zeros(0, dtype="<u4")
    return header + x.tobytes() + y.tobytes() + grad + sizes.tobytes() + order.tobytes()


def _cmake(*args: str) -> None:
    proc = subprocess.run(["cmake", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise BuildError(f"cmake {' '.join(args)} failed:\n{tail}")


def build_host(build_dir: Path = DEFAULT_BUILD, *, sanitize: bool = False) -> Path:
    """Configure (if needed) and build nmcm-train in ``build_dir``; return the binary's path."""
    if not (build_dir / "CMakeCache.txt").exists():
        _cmake(
            "-S",
            str(FIRMWARE),
            "-B",
            str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DNMCM_SANITIZE={'ON' if sanitize else 'OFF'}",
            "-DNMCM_BUILD_TESTS=OFF",
        )
    _cmake("--build", str(build_dir), "--target", BINARY, "-j2")
    return build_dir / "apps" / "train" / BINARY


@functools.cache
def trainer_binary(build_dir: Path | None = None) -> Path:
    """The nmcm-train to use: in ``build_dir``, else ``$NMCM_HOST_BUILD``, else the default."""
    if build_dir is None:
        env = os.environ.get("NMCM_HOST_BUILD")
        build_dir = Path(env) if env else DEFAULT_BUILD
    return build_host(build_dir.resolve())


def _run(binary: Path | None, args: list[str]) -> str:
    exe = binary if binary is not None else trainer_binary()
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True)
    if proc.returncode != 0:
        message = proc.stderr.strip() or f"exit code {proc.returncode}"
        raise HostTrainerError(message.removeprefix("nmcm-train: "))
    return proc.stdout


def _options(
    arena_capacity: int | None, expect_stage: tuple[int, int] | None, expect_hash: bytes | None
) -> list[str]:
    args: list[str] = []
    if arena_capacity is not None:
        args += ["--arena-capacity", str(arena_capacity)]
    if expect_stage is not None and expect_hash is not None:
        args += ["--expect-stage", f"{expect_stage[0]}/{expect_stage[1]}"]
        args += ["--expect-hash", expect_hash.hex()]
    elif expect_stage is not None or expect_hash is not None:
        raise ValueError("expect_stage and expect_hash go together")
    return args


def check(
    blob: bytes,
    *,
    binary: Path | None = None,
    arena_capacity: int | None = None,
    expect_stage: tuple[int, int] | None = None,
    expect_hash: bytes | None = None,
) -> dict[str, int]:
    """Load the blob in the engine (every loader check) and return its summary."""
    with tempfile.TemporaryDirectory(prefix="nmcm-") as tmp:
        path = Path(tmp) / "stage.blob"
        path.write_bytes(blob)
        args = ["check", "--blob", str(path), *_options(arena_capacity, expect_stage, expect_hash)]
        summary: dict[str, int] = json.loads(_run(binary, args))
        return summary


def train(
    blob: bytes, job: Job, *, binary: Path | None = None, arena_capacity: int | None = None
) -> TrainResult:
    """Train a whole-model blob on the job's steps; return the trained blob, weights and losses."""
    with tempfile.TemporaryDirectory(prefix="nmcm-") as tmp:
        d = Path(tmp)
        (d / "in.blob").write_bytes(blob)
        (d / "job.bin").write_bytes(encode_job(job))
        args = ["train", "--blob", str(d / "in.blob"), "--job", str(d / "job.bin")]
        args += ["--out", str(d / "out.blob"), "--losses", str(d / "losses.csv")]
        summary = json.loads(_run(binary, args + _options(arena_capacity, None, None)))
        trained = (d / "out.blob").read_bytes()
        table = np.loadtxt(d / "losses.csv", delimiter=",", skiprows=1, ndmin=2)
    losses = table[:, 1] if len(table) else np.zeros(0)
    correct = table[:, 2].astype(np.int64) if len(table) else np.zeros(0, dtype=np.int64)
    return TrainResult(
        trained, read_blob(trained).weights, losses, correct, float(summary["seconds"])
    )


def grad(blob: bytes, job: Job, *, binary: Path | None = None) -> GradResult:
    """One forward and backward of a single batch (``job.steps[0]``) through any stage."""
    if len(job.steps) != 1:
        raise ValueError("grad runs exactly one step")
    stage = read_blob(blob)
    with tempfile.TemporaryDirectory(prefix="nmcm-") as tmp:
        d = Path(tmp)
        (d / "in.blob").write_bytes(blob)
        (d / "job.bin").write_bytes(encode_job(job))
        args = ["grad", "--blob", str(d / "in.blob"), "--job", str(d / "job.bin")]
        _run(binary, [*args, "--out", str(d / "grad.bin")])
        data = (d / "grad.bin").read_bytes()
    magic, _version, n, out_floats, in_floats, n_tensors, loss_sum, correct = (
        GRAD_HEADER.unpack_from(data, 0)
    )
    if magic != b"NMCG" or n_tensors != len(stage.plan.tensors):
        raise HostTrainerError("nmcm-train wrote an unexpected gradient file")
    floats = np.frombuffer(data, dtype="<f4", offset=GRAD_HEADER.size)
    outputs = floats[: n * out_floats].reshape(n, out_floats)
    pos = n * out_floats
    grad_input = None
    if in_floats:
        grad_input = floats[pos : pos + n * in_floats].reshape(n, in_floats)
        pos += n * in_floats
    grads = []
    for t in stage.plan.tensors:
        grads.append(floats[pos : pos + t.count].reshape(t.shape))
        pos += t.count
    return GradResult(outputs, grad_input, tuple(grads), float(loss_sum), int(correct))
