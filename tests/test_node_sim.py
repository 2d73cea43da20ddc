"""Real `sim` nodes: `nmcm-node` executables built for the stages of an exported manifest, one
process per node on loopback, driven by the coordinator (`NodeLink`, `TrainingJob`).

* Trained on digits through 1 and 2 nodes, the weights pulled back equal those of the same loop in
  PyTorch within TRAIN_RTOL (tests/engine_helpers.py states why: float32 summation order).
* A node killed mid-training makes the job raise NodeFailed naming it, within seconds; its
  neighbour keeps answering STATUS.
* Random and mutated frames on coordinator connections never crash or hang a node.

The node libraries are built once with CMake in build/node-sim; each node is then compiled and
linked by hand from firmware/apps/node/node_config.cpp, as firmware/apps/node/README.md says.
"""

from __future__ import annotations

import contextlib
import random
import shutil
import socket
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from nmcm_deploy.build.host import NODE_LIBRARIES
from nmcm_deploy.compiler.cluster import CompiledCluster, build_model, compile_cluster, write_export
from nmcm_deploy.coordinator.job import JobConfig, TrainingJob
from nmcm_deploy.coordinator.link import Identity, NodeFailed, NodeLink
from nmcm_deploy.datasets import batch_order, load_dataset
from nmcm_deploy.manifest import load_manifest
from nmcm_deploy.manifest.model import Manifest
from nmcm_deploy.protocol import (
    Ack,
    BatchBegin,
    Flags,
    GetWeights,
    Hello,
    Inputs,
    Labels,
    Message,
    MessageType,
    Mode,
    NodeState,
    Role,
    SetWeights,
    Shutdown,
    StatusRequest,
    Step,
    TensorKind,
    encode,
)
from tests.conftest import QUICKSTART, ROOT
from tests.engine_helpers import TRAIN_RTOL, reference_loss, rel_err

FIRMWARE = ROOT / "firmware"
BUILD = ROOT / "build" / "node-sim"
# Static libraries of a node, dependents before their dependencies (firmware/apps/node/README.md).
LIBRARIES = [
    "apps/node/libnmcm_node_host.a",
    "apps/node/libnmcm_node_pace.a",
    "runtime/w5500/libnmcm_runtime_w5500.a",
    "runtime/libnmcm_runtime.a",
    "drivers/w5500/libnmcm_w5500.a",
    "tools/w5500_emulator/libnmcm_w5500_emulator.a",
    "net/libnmcm_net_posix.a",
    "net/libnmcm_net.a",
    "core/libnmcm_core.a",
]
FIRMWARE_HASH = "0123456789abcdef0123456789abcdef"


def test_the_libraries_are_the_ones_nmcm_links() -> None:
    """This test's hand-written link line is the README's and the one nmcm uses (build/host.py)."""
    names = [Path(lib).name.removeprefix("lib").removesuffix(".a") for lib in LIBRARIES]
    assert names == list(NODE_LIBRARIES)


pytestmark = pytest.mark.skipif(
    shutil.which("cmake") is None or shutil.which("g++") is None, reason="needs cmake and g++"
)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout}{proc.stderr}"


@pytest.fixture(scope="module")
def node_libraries() -> Path:
    """The node libraries, built (incrementally) with CMake."""
    if not (BUILD / "CMakeCache.txt").exists():
        _run(
            [
                "cmake", "-S", str(FIRMWARE), "-B", str(BUILD), "-DCMAKE_BUILD_TYPE=Release",
                "-DNMCM_BUILD_TESTS=OFF", "-DNMCM_SANITIZE=OFF",
            ]
        )  # fmt: skip
    _run(["cmake", "--build", str(BUILD), "--target", "nmcm_node_host", "-j2"])
    return BUILD


def build_node(libraries: Path, config_dir: Path) -> Path:
    """One node's executable: its node_config.cpp against its generated header, linked by hand."""
    image = config_dir / "nmcm-node"
    _run(
        [
            "g++", "-std=c++17", "-O2", "-fno-exceptions", "-fno-rtti", "-Wall", "-Wextra",
            "-Werror", f"-I{config_dir}", f"-I{FIRMWARE / 'apps' / 'node'}",
            str(FIRMWARE / "apps" / "node" / "node_config.cpp"),
            *(str(libraries / lib) for lib in LIBRARIES), "-pthread", "-o", str(image),
        ]
    )  # fmt: skip
    return image


def free_port_base() -> int:
    """A base port in 20000-40000 whose next few ports are free, so tests do not collide."""
    rng = random.SystemRandom()
    for _ in range(100):
        base = rng.randrange(20000, 40000 - 4)
        try:
            for port in range(base, base + 3):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


def write_manifest(tmp: Path, *, stages: int, micro_batches: int, base: int) -> Path:
    doc: dict[str, Any] = yaml.safe_load(QUICKSTART.read_text())
    spec = doc["spec"]
    spec["network"]["port"] = base
    spec["training"]["micro_batches"] = micro_batches
    spec["training"]["optimizer"]["weight_decay"] = 1e-3
    if stages == 1:
        doc["metadata"]["name"] = "digits-one-node"
        spec["nodes"] = spec["nodes"][:1]
        spec["stages"] = [{"node": spec["nodes"][0]["name"], "layers": [0, 5]}]
    path = tmp / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@dataclass
class SimNode:
    name: str
    stage: int
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""


@dataclass
class SimCluster:
    manifest: Manifest
    compiled: CompiledCluster
    nodes: list[SimNode]

    def identity(self, stage: int) -> Identity:
        return Identity(
            self.compiled.name, self.compiled.model_hash, stage, len(self.compiled.stages)
        )

    def links(self) -> list[NodeLink]:
        return [
            NodeLink.open(n.name, "127.0.0.1", n.port, self.identity(n.stage), connect_timeout=5)
            for n in self.nodes
        ]

    def observe(self, node: SimNode) -> NodeLink:
        return NodeLink.open(
            node.name, "127.0.0.1", node.port, self.identity(node.stage), role=Role.OBSERVER
        )


def wait_listening(node: SimNode, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert node.proc.poll() is None, f"{node.name} exited:\n{node.log_tail()}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", node.port)) == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"{node.name} did not listen:\n{node.log_tail()}")


@contextlib.contextmanager
def sim_cluster(
    tmp: Path, libraries: Path, *, stages: int, micro_batches: int
) -> Iterator[SimCluster]:
    """Export the manifest, build a node per stage, start them; stop them with SHUTDOWN (each
    must exit with 0), or kill what does not answer."""
    base = free_port_base()
    manifest = load_manifest(
        write_manifest(tmp, stages=stages, micro_batches=micro_batches, base=base)
    )
    compiled = compile_cluster(manifest, "sim")
    dirs = write_export(compiled, tmp / "export")
    nodes = []
    for stage, folder in zip(compiled.stages, dirs, strict=True):
        image = build_node(libraries, folder)
        log = folder / "node.log"
        port = stage.network.listen_port
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [str(image), "--blob", str(folder / "stage.blob"), "--port", str(port),
                 "--firmware-hash", FIRMWARE_HASH],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        nodes.append(SimNode(stage.plan.node.name, stage.plan.index, port, proc, log))
    cluster = SimCluster(manifest, compiled, nodes)
    try:
        for node in nodes:
            wait_listening(node)
        yield cluster
    finally:
        for node in nodes:
            if node.proc.poll() is None:
                with contextlib.suppress(NodeFailed, OSError):
                    link = cluster.observe(node)
                    link.send(Shutdown())
                    link.expect(MessageType.ACK)
                    link.close()
                try:
                    node.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()
                    raise AssertionError(
                        f"{node.name} ignored SHUTDOWN:\n{node.log_tail()}"
                    ) from None
                assert node.proc.returncode == 0, f"{node.name}:\n{node.log_tail()}"


@pytest.fixture(scope="module")
def digits() -> Any:
    return load_dataset(
        name="sklearn-digits", npz=None, input_shape=(1, 8, 8), test_fraction=0.2, shuffle=True,
        seed=0,
    )  # fmt: skip


def job_config(manifest: Manifest) -> JobConfig:
    t = manifest.training
    return JobConfig(
        epochs=1,
        batch_size=t.batch_size,
        micro_batches=t.micro_batches,
        loss=t.loss,
        lr=t.optimizer.lr,
        momentum=t.optimizer.momentum,
        weight_decay=t.optimizer.weight_decay,
        schedule="pipelined",
    )


@pytest.mark.parametrize(("stages", "micro_batches"), [(1, 1), (2, 2)])
def test_training_matches_pytorch(
    tmp_path: Path, node_libraries: Path, digits: Any, stages: int, micro_batches: int
) -> None:
    """Batches of 16 (the last one short: 14 rows) through the nodes and through PyTorch's loop
    from the same starting weights: every pulled tensor and every batch loss within TRAIN_RTOL.
    With 2 micro-batches on 2 stages, both are in flight at once (window = 2 slots)."""
    x, y = digits.x_train, digits.y_train
    epoch = batch_order(len(x), 16, 1, True, 0)[0]
    batches = [*epoch[:15], epoch[-1]]
    assert len(batches[-1]) == len(x) % 16 == 14
    with sim_cluster(tmp_path, node_libraries, stages=stages, micro_batches=micro_batches) as sim:
        links = sim.links()
        try:
            job = TrainingJob(links, job_config(sim.manifest))
            assert job.window == micro_batches
            node_losses = []
            for rows in batches:
                loss_sum, _ = job.run_batch(x[rows], y[rows], mode=Mode.TRAIN, epoch=1)
                node_losses.append(loss_sum / len(rows))
            accuracy = job.evaluate(digits.x_test, digits.y_test, 1)
            counts = [[t.count for t in s.plan.memory.tensors] for s in sim.compiled.stages]
            pulled = {
                name: job.pull_tensor(stage, t, counts[stage][t])
                for name, (stage, t) in sim.compiled.param_names.items()
            }
            status = [link.status() for link in links]
        finally:
            for link in links:
                link.close()

    model, _ = build_model(sim.manifest)
    t = sim.manifest.training.optimizer
    opt = torch.optim.SGD(
        model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
    )
    xt, yt = torch.tensor(x), torch.tensor(y)
    torch_losses = []
    for rows in batches:
        index = torch.from_numpy(rows.astype(np.int64))
        opt.zero_grad()
        loss = reference_loss(model, xt[index], yt[index], "cross_entropy")  # type: ignore[arg-type]
        loss.backward()
        opt.step()
        torch_losses.append(loss.item())

    errors = {name: rel_err(pulled[name], p.reshape(-1)) for name, p in model.state_dict().items()}
    assert set(errors) == set(pulled)
    assert max(errors.values()) <= TRAIN_RTOL, errors
    assert rel_err(np.array(node_losses), np.array(torch_losses)) <= TRAIN_RTOL
    with torch.no_grad():
        predicted = model(torch.tensor(digits.x_test)).argmax(dim=1).numpy()
    assert accuracy == pytest.approx(float((predicted == digits.y_test).mean()))
    assert all(s.steps == len(batches) and s.state is NodeState.IDLE for s in status)
    assert status[-1].last_loss == pytest.approx(node_losses[-1], rel=1e-6)
    assert all(s.firmware_hash.hex() == FIRMWARE_HASH for s in status)
    assert all(s.compute_ticks > 0 and s.tick_hz == 10**9 for s in status)


@pytest.mark.parametrize("victim", ["f413", "h7a3"])
def test_killing_a_node_fails_the_job_naming_it(
    tmp_path: Path, node_libraries: Path, digits: Any, victim: str
) -> None:
    x, y = digits.x_train, digits.y_train
    with sim_cluster(tmp_path, node_libraries, stages=2, micro_batches=2) as sim:
        node = next(n for n in sim.nodes if n.name == victim)
        survivor = next(n for n in sim.nodes if n.name != victim)
        links = sim.links()
        killed_at: list[float] = []

        def kill() -> None:
            killed_at.append(time.monotonic())
            node.proc.kill()

        timer = threading.Timer(0.5, kill)
        job = TrainingJob(links, job_config(sim.manifest))
        timer.start()
        try:
            with pytest.raises(NodeFailed) as failure:
                for rows in batch_order(len(x), 16, 1, True, 0)[0] * 50:
                    job.run_batch(x[rows], y[rows], mode=Mode.TRAIN, epoch=1)
            failed_at = time.monotonic()
        finally:
            timer.cancel()
            for link in links:
                link.close()
        assert killed_at, "the job finished before the node was killed"
        assert failure.value.node == victim, str(failure.value)
        assert failed_at - killed_at[0] < 5.0
        # The neighbour dropped the batch and keeps serving, so `nmcm status` can see it.
        node.proc.wait()
        observer = sim.observe(survivor)
        report = observer.status()
        observer.close()
        assert report.state is NodeState.IDLE
        assert survivor.proc.poll() is None


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        if op == 0 and b:  # flip a bit
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
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


def _sealed_header(rng: random.Random, sequence: int) -> bytes:
    """A header with a valid header CRC but random type, flags and length: it passes check 3."""
    type_ = rng.choice([t for t in range(256) if t != MessageType.SHUTDOWN])
    fields = (
        b"NMCP"
        + bytes([1, type_])
        + rng.choice([0, 1, rng.randrange(65536)]).to_bytes(2, "little")
        + sequence.to_bytes(4, "little")
        + rng.randrange(4).to_bytes(4, "little")
        + rng.randrange(3).to_bytes(2, "little")
        + bytes(2)
        + rng.choice([0, 8, 16, 128, rng.randrange(70000)]).to_bytes(4, "little")
    )
    return fields + zlib.crc32(fields).to_bytes(4, "little")


def _repair(sim: SimCluster) -> None:
    """Sets every tensor (parameters and momentum) again: a corrupted SET_WEIGHTS chunk leaves the
    node refusing batches until then, and the fuzzer should keep reaching batch states."""
    link = sim.links()[0]
    try:
        for tensor, info in enumerate(sim.compiled.stages[0].plan.memory.tensors):
            for kind in (TensorKind.PARAMETER, TensorKind.MOMENTUM):
                data = np.full(info.count, 0.01, np.float32)
                for offset in range(0, info.count, 100):
                    chunk = data[offset : offset + 100]
                    link.send(
                        SetWeights(tensor=tensor, offset=offset, total=info.count, data=chunk,
                                   kind=kind)
                    )  # fmt: skip
                    link.expect(MessageType.ACK)
    finally:
        link.close()


def test_fuzzed_frames_never_crash_or_hang_a_node(tmp_path: Path, node_libraries: Path) -> None:
    rng = random.Random(1234)
    with sim_cluster(tmp_path, node_libraries, stages=1, micro_batches=1) as sim:
        node = sim.nodes[0]
        identity = sim.identity(0)
        hello = Hello(
            role=Role.COORDINATOR, stage_index=0, stage_count=1, max_payload=65536,
            model_hash=identity.model_hash, cluster=identity.cluster,
        )  # fmt: skip
        x = np.random.default_rng(0).random((16, 64), dtype=np.float32)
        # Coordinator messages with the flags they go with; a batch's frames mostly in batch 1.
        messages: list[tuple[Message, Flags]] = [
            (StatusRequest(), Flags.NONE),
            (BatchBegin(batch_size=16, micro_batches=1, mode=Mode.TRAIN), Flags.NONE),
            (BatchBegin(batch_size=16, micro_batches=1, mode=Mode.EVAL), Flags.EVAL),
            (Inputs(data=x), Flags.NONE),
            (Labels(labels=np.arange(16, dtype=np.int32) % 10), Flags.NONE),
            (Step(lr=0.05, momentum=0.9), Flags.NONE),
            (GetWeights(tensor=0, offset=0, count=50), Flags.NONE),
            (SetWeights(tensor=1, offset=0, total=8, data=np.zeros(8, np.float32)), Flags.NONE),
            (Ack(acked_type=MessageType.STATUS, acked_sequence=0), Flags.NONE),
        ]
        iterations = 300
        for i in range(iterations):
            if i % 25 == 0:
                _repair(sim)
            frames = [encode(hello, sequence=0)]
            if rng.random() < 0.5:  # a whole batch, to reach forward, loss and step
                for seq, (message, flags) in enumerate(
                    [messages[1], messages[3], messages[4], messages[5]], start=1
                ):
                    frames.append(encode(message, sequence=seq, batch=1, flags=flags))
            else:
                for seq in range(1, rng.randint(2, 5)):
                    message, flags = rng.choice(messages)
                    frames.append(
                        encode(message, sequence=seq, batch=rng.choice([1, 1, 0, 2]),
                               micro_batch=rng.choice([0, 0, 1]), flags=flags)
                    )  # fmt: skip
            stream = b"".join(frames)
            kind = rng.random()
            if kind < 0.5:
                hello_end = len(frames[0])  # keep the HELLO whole: reach the handlers
                stream = stream[:hello_end] + _mutate(rng, stream[hello_end:])
            elif kind < 0.65:
                stream = _mutate(rng, stream)
            elif kind < 0.8:
                stream = frames[0] + _sealed_header(rng, 1) + rng.randbytes(rng.randrange(200))
            elif kind < 0.9:
                stream = frames[0] + rng.randbytes(rng.randrange(1, 300))
            # else: the frames as they are
            with socket.create_connection(("127.0.0.1", node.port), timeout=5) as s:
                with contextlib.suppress(OSError):
                    s.sendall(stream)
                    s.shutdown(socket.SHUT_WR)
                # The node must close the connection: every stream ends, cut or not.
                deadline = time.monotonic() + 5
                with contextlib.suppress(ConnectionResetError):
                    while s.recv(65536):
                        assert time.monotonic() < deadline, "the node hangs on a fuzzed stream"
            assert node.proc.poll() is None, f"the node died:\n{node.log_tail()}"
        # Still serving: a fresh connection gets its STATUS.
        observer = sim.observe(node)
        report = observer.status()
        observer.close()
        assert report.frames_rejected > iterations // 4
        assert report.steps > 0 and report.compute_ticks > 0  # the fuzz reached the executor
