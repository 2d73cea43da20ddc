"""The relay of a QEMU node (nmcm_deploy/targets/qemu_relay.py) against a node played by the test
through the relay's named pipes, with the records of nmcm/port/host_link.h: bytes both ways, one
client at a time on a listening stream, bytes without a peer dropped, the connecting stream's
retries, a POLL answered as bytes come, and the node's credit bounding what the relay holds. The
echo through a real QEMU image is in test_arm_builds.py."""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from nmcm_deploy.targets.qemu import RELAY
from tests.cluster_helpers import free_port_block

STREAMS = 4
HOLD = 0xFFFF
ROOM = (4096,) * STREAMS
DEADLINE_S = 20.0


class Node:
    """The node's side of the pipes."""

    def __init__(self, link: Path) -> None:
        self.to_node = os.open(link / "to-node", os.O_RDONLY)
        self.to_host = os.open(link / "to-host", os.O_WRONLY)

    def close(self) -> None:
        os.close(self.to_node)
        os.close(self.to_host)

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = os.read(self.to_node, n - len(data))
            assert chunk, "the relay closed the pipe"
            data += chunk
        return data

    def ask(self, wait_ms: int = 0) -> None:
        poll = struct.pack("<BBH", ord("P"), 0, 10) + struct.pack("<5H", wait_ms, *ROOM)
        os.write(self.to_host, poll)

    def answer(self) -> tuple[list[bytes], list[int]]:
        header = struct.unpack("<8H", self._read(16))
        counts, credits = list(header[:STREAMS]), list(header[STREAMS:])
        assert all(c <= r for c, r in zip(counts, ROOM, strict=True))
        return [self._read(n) for n in counts], credits

    def poll(self, wait_ms: int = 0) -> tuple[list[bytes], list[int]]:
        self.ask(wait_ms)
        return self.answer()

    def send(self, stream: int, data: bytes) -> None:
        os.write(self.to_host, struct.pack("<BBH", ord("D"), stream, len(data)) + data)

    def receive(self, stream: int, n: int) -> bytes:
        """Polls until n bytes came on ``stream``."""
        got = b""
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < n:
            assert time.monotonic() < deadline, got
            data, _ = self.poll(100)
            got += data[stream]
            assert not any(data[s] for s in range(STREAMS) if s != stream), data
        return got


@contextmanager
def relay(tmp_path: Path, listen: dict[int, int], connect: dict[int, int]) -> Iterator[Node]:
    link = tmp_path / "link"
    command = [sys.executable, str(RELAY), "--link", str(link)]
    command += [a for s, p in listen.items() for a in ("--listen", f"{s}:{p}")]
    command += [a for s, p in connect.items() for a in ("--connect", f"{s}:{p}")]
    # The child stands in for QEMU: the relay lives as long as it does.
    process = subprocess.Popen([*command, "--", "sleep", "600"])
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not (link / "to-host").exists() or not all(_listening(p) for p in listen.values()):
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        node = Node(link)
        yield node
        node.close()
        process.send_signal(signal.SIGTERM)  # passed on to the child
        assert process.wait(timeout=DEADLINE_S) == 128 + signal.SIGTERM
        assert not link.exists()  # the pipes go with the relay
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _recv(connection: socket.socket, n: int) -> bytes:
    connection.settimeout(DEADLINE_S)
    data = bytearray()
    while len(data) < n:
        chunk = connection.recv(min(n - len(data), 1 << 16))
        assert chunk, len(data)
        data += chunk
    return bytes(data)


@pytest.fixture
def ports() -> list[int]:
    return [free_port_block(4) + i for i in range(4)]


def test_a_listening_stream_carries_bytes_both_ways_one_client_at_a_time(
    tmp_path: Path, ports: list[int]
) -> None:
    with relay(tmp_path, {0: ports[0], 3: ports[3]}, {}) as node:
        first = socket.create_connection(("127.0.0.1", ports[0]))
        first.sendall(b"hello")
        assert node.receive(0, 5) == b"hello"
        node.send(0, b"back")
        assert _recv(first, 4) == b"back"
        # A second client waits in the backlog: nothing of it reaches the node ...
        second = socket.create_connection(("127.0.0.1", ports[0]))
        second.sendall(b"second")
        observer = socket.create_connection(("127.0.0.1", ports[3]))
        observer.sendall(b"status")
        assert node.receive(3, 6) == b"status"  # (another stream is served meanwhile)
        data, _ = node.poll(0)
        assert data[0] == b""
        # ... until the first has gone.
        first.close()
        assert node.receive(0, 6) == b"second"
        node.send(0, b"yours")
        assert _recv(second, 5) == b"yours"
        second.close()
        observer.close()


def test_bytes_without_a_peer_are_dropped(tmp_path: Path, ports: list[int]) -> None:
    with relay(tmp_path, {0: ports[0]}, {}) as node:
        _, credits = node.poll(0)
        assert credits[0] == HOLD  # with no peer, anything goes (nowhere)
        node.send(0, b"lost")
        client = socket.create_connection(("127.0.0.1", ports[0]))
        client.sendall(b"!")
        assert node.receive(0, 1) == b"!"  # accepted now
        node.send(0, b"kept")
        assert _recv(client, 4) == b"kept"  # not "lostkept"
        client.close()


def test_the_connecting_stream_retries_until_its_peer_listens_and_after_it_closed(
    tmp_path: Path, ports: list[int]
) -> None:
    with (
        relay(tmp_path, {0: ports[0]}, {2: ports[2]}) as node,
        socket.create_server(("127.0.0.1", ports[2])) as server,
    ):
        server.settimeout(DEADLINE_S)
        for round_ in range(2):
            peer, _ = server.accept()
            with peer:
                # Bytes count from the connection on: the node may send before or after the
                # relay saw it complete, so it repeats a marker until one arrives.
                peer.settimeout(0.05)
                got = b""
                deadline = time.monotonic() + DEADLINE_S
                while b"#" not in got:
                    assert time.monotonic() < deadline
                    node.send(2, b"#")
                    node.poll(0)
                    with suppress(TimeoutError):
                        got += peer.recv(64)
                peer.sendall(f"round {round_}".encode())
                assert node.receive(2, 7) == f"round {round_}".encode()


def test_a_poll_answers_when_bytes_come_not_at_its_deadline(
    tmp_path: Path, ports: list[int]
) -> None:
    with relay(tmp_path, {0: ports[0]}, {}) as node:
        client = socket.create_connection(("127.0.0.1", ports[0]))
        client.sendall(b"x")
        assert node.receive(0, 1) == b"x"
        data, _ = node.poll(0)
        assert data == [b""] * STREAMS  # wait 0: answered at once, empty
        start = time.monotonic()
        # A minute's wait, the bytes sent after the POLL: an answer at the deadline is unmissable.
        node.ask(60_000)
        client.sendall(b"late")
        data, _ = node.answer()
        assert data[0] == b"late"
        assert time.monotonic() - start < 30
        client.close()


def test_the_node_s_credit_bounds_what_the_relay_holds(tmp_path: Path, ports: list[int]) -> None:
    """A peer that stops reading: the socket's buffers fill, then the relay's hold, and the node's
    credit falls to 0; once the peer reads, every byte arrives in order."""
    with relay(tmp_path, {0: ports[0]}, {}) as node:
        client = socket.create_connection(("127.0.0.1", ports[0]))
        client.sendall(b"!")
        assert node.receive(0, 1) == b"!"
        sent = bytearray()
        counter = 0
        deadline = time.monotonic() + DEADLINE_S
        while True:
            assert time.monotonic() < deadline, len(sent)
            _, credits = node.poll(0)
            if credits[0] == 0:
                break
            size = min(credits[0], 8192)
            block = bytes((counter + i) % 251 for i in range(size))
            counter += size
            node.send(0, block)
            sent += block
        assert len(sent) >= HOLD  # the relay held a full credit's worth before saying 0
        assert _recv(client, len(sent)) == bytes(sent)
        client.close()
