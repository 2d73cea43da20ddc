"""The relay of one QEMU node: joins the node's four byte streams to its loopback ports.

    python qemu_relay.py --link DIR --listen 0:PORT [--listen 1:PORT] --listen 3:PORT
                         [--connect 2:PORT] -- qemu-system-arm ... arg=link=DIR ...

It makes two named pipes in DIR (``to-node``, ``to-host``), listens on the ports, starts QEMU as
its child and passes bytes between the ports and the pipes until QEMU ends, then ends with QEMU's
status (a signal to the relay goes on to QEMU first). The firmware reads and writes the pipes
through semihosting (firmware/apps/node-qemu/host_link.h, which also describes the records).

Each stream behaves as a CMSDK UART joined to a socket chardev did (docs/protocol.md, "Under
QEMU"): a listening stream takes one client at a time (others wait in the backlog), the connecting
one retries every 100 ms while refused and after its peer closed, and bytes a stream has no peer
for are dropped. A closed client's bytes that reached the relay still reach the node.

Standard library only, started by path: it must start in milliseconds and outlive ``nmcm apply``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

STREAMS = 4
DATA = ord("D")
POLL = ord("P")
RECORD_HEADER = 4
POLL_BODY = 2 + 2 * STREAMS
# What the relay holds per stream towards a socket (the node's credit) and towards the node.
HOLD = 0xFFFF
RETRY_S = 0.1
BACKLOG = 8


class Stream:
    """One stream: its socket (a client of a listening stream, or the connecting stream's
    connection) and the bytes held each way."""

    def __init__(self, index: int, listen: int | None, connect: int | None) -> None:
        self.index = index
        self.listen_port = listen
        self.connect_port = connect
        self.server: socket.socket | None = None
        self.peer: socket.socket | None = None
        self.connecting = False
        self.next_try = 0.0
        self.to_node = bytearray()
        self.to_peer = bytearray()

    def credit(self) -> int:
        # Without a peer the bytes are dropped, so the node may send them all.
        return HOLD - len(self.to_peer) if self.peer is not None and not self.connecting else HOLD


class Relay:
    def __init__(self, link: Path, streams: list[Stream], host: str = "127.0.0.1") -> None:
        self.link = link
        self.streams = streams
        self.host = host
        self.selector = selectors.DefaultSelector()
        self.from_node = bytearray()
        self.to_node_pipe = bytearray()
        self.poll: tuple[float, list[int]] | None = None  # deadline, the node's room per stream
        self.pipes()
        for stream in streams:
            if stream.listen_port is not None:
                server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                server.bind((host, stream.listen_port))
                server.listen(BACKLOG)
                server.setblocking(False)
                stream.server = server
                self.selector.register(server, selectors.EVENT_READ, partial_accept(self, stream))

    def pipes(self) -> None:
        for name in ("to-node", "to-host"):
            path = self.link / name
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.mkfifo(path, 0o600)
        # Read-write ends: opening never waits for QEMU, and no pipe ends while the relay lives.
        self.to_node_fd = os.open(self.link / "to-node", os.O_RDWR | os.O_NONBLOCK)
        self.to_host_fd = os.open(self.link / "to-host", os.O_RDWR | os.O_NONBLOCK)
        self.selector.register(self.to_host_fd, selectors.EVENT_READ, self.read_node)

    # --- the node's side ----------------------------------------------------------------------

    def read_node(self, _mask: int) -> None:
        try:
            chunk = os.read(self.to_host_fd, 1 << 16)
        except BlockingIOError:
            return
        self.from_node += chunk
        while len(self.from_node) >= RECORD_HEADER:
            kind, index, length = struct.unpack_from("<BBH", self.from_node)
            if len(self.from_node) < RECORD_HEADER + length:
                break
            body = bytes(self.from_node[RECORD_HEADER : RECORD_HEADER + length])
            del self.from_node[: RECORD_HEADER + length]
            if kind == DATA and index < STREAMS:
                stream = self.streams[index]
                if stream.peer is not None and not stream.connecting:
                    stream.to_peer += body
                    self.send_peer(stream)
            elif kind == POLL and length == POLL_BODY:
                wait_ms, *room = struct.unpack("<H4H", body)
                self.poll = (time.monotonic() + wait_ms / 1000.0, list(room))
                self.answer_poll(force=wait_ms == 0)
            else:
                sys.stderr.write(f"relay: a bad record from the node (kind {kind})\n")
                raise SystemExit(3)

    def answer_poll(self, force: bool = False) -> None:
        if self.poll is None:
            return
        deadline, room = self.poll
        ready = any(min(room[s.index], len(s.to_node)) > 0 for s in self.streams)
        if not (ready or force or time.monotonic() >= deadline):
            return
        self.poll = None
        counts = []
        data = bytearray()
        for stream in self.streams:
            n = min(room[stream.index], len(stream.to_node))
            counts.append(n)
            data += stream.to_node[:n]
            del stream.to_node[:n]
            if n and stream.peer is not None:
                self.watch_peer(stream)  # room again: read the socket
        credits = [stream.credit() for stream in self.streams]
        self.to_node_pipe += struct.pack("<4H4H", *counts, *credits) + data
        self.flush_node()

    def flush_node(self) -> None:
        while self.to_node_pipe:
            try:
                sent = os.write(self.to_node_fd, self.to_node_pipe)
            except BlockingIOError:
                # The node reads an answer whole before it asks again: a full pipe drains.
                time.sleep(0.001)
                continue
            del self.to_node_pipe[:sent]

    # --- the peers' side ----------------------------------------------------------------------

    def accept(self, stream: Stream) -> None:
        if stream.peer is not None or stream.server is None:
            return
        try:
            peer, _ = stream.server.accept()
        except (BlockingIOError, InterruptedError):
            return
        peer.setblocking(False)
        peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        stream.peer = peer
        stream.to_peer.clear()
        # One client at a time: the next waits in the backlog until this one is gone.
        self.selector.unregister(stream.server)
        self.watch_peer(stream)

    def watch_peer(self, stream: Stream) -> None:
        assert stream.peer is not None
        events = 0
        if stream.connecting:
            events = selectors.EVENT_WRITE
        else:
            if len(stream.to_node) < HOLD:
                events |= selectors.EVENT_READ
            if stream.to_peer:
                events |= selectors.EVENT_WRITE
        callback = partial_peer(self, stream)
        try:
            key = self.selector.get_key(stream.peer)
        except KeyError:
            if events:
                self.selector.register(stream.peer, events, callback)
            return
        if events == 0:
            self.selector.unregister(stream.peer)
        elif key.events != events:
            self.selector.modify(stream.peer, events, callback)

    def on_peer(self, stream: Stream, mask: int) -> None:
        if stream.peer is None:
            return
        if stream.connecting:
            error = stream.peer.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self.drop_peer(stream)
                return
            stream.connecting = False
            stream.peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.watch_peer(stream)
            return
        if mask & selectors.EVENT_READ:
            try:
                chunk = stream.peer.recv(HOLD - len(stream.to_node))
            except (BlockingIOError, InterruptedError):
                chunk = None
            except OSError:
                chunk = b""
            if chunk == b"":
                self.drop_peer(stream)
                return
            if chunk:
                stream.to_node += chunk
                self.answer_poll()
        if mask & selectors.EVENT_WRITE:
            self.send_peer(stream)
            return
        self.watch_peer(stream)

    def send_peer(self, stream: Stream) -> None:
        if stream.peer is None:
            return
        try:
            sent = stream.peer.send(stream.to_peer)
            del stream.to_peer[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.drop_peer(stream)
            return
        self.watch_peer(stream)

    def drop_peer(self, stream: Stream) -> None:
        """The peer closed or failed: what it sent stays for the node; what it was sent goes."""
        if stream.peer is not None:
            with contextlib.suppress(KeyError):
                self.selector.unregister(stream.peer)
            stream.peer.close()
        stream.peer = None
        stream.connecting = False
        stream.to_peer.clear()
        if stream.server is not None:
            self.selector.register(
                stream.server, selectors.EVENT_READ, partial_accept(self, stream)
            )
        stream.next_try = time.monotonic() + RETRY_S

    def connect(self, stream: Stream) -> None:
        if stream.connect_port is None or stream.peer is not None:
            return
        if time.monotonic() < stream.next_try:
            return
        peer = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        peer.setblocking(False)
        result = peer.connect_ex((self.host, stream.connect_port))
        if result not in (0, errno.EINPROGRESS):
            peer.close()
            stream.next_try = time.monotonic() + RETRY_S
            return
        stream.peer = peer
        stream.connecting = True
        self.watch_peer(stream)

    # --- the loop -----------------------------------------------------------------------------

    def timeout(self) -> float:
        times = [s.next_try for s in self.streams if s.connect_port is not None and not s.peer]
        if self.poll is not None:
            times.append(self.poll[0])
        return max(0.0, min(times) - time.monotonic()) if times else 1.0

    def run(self, child: subprocess.Popen[bytes]) -> int:
        pidfd = os.pidfd_open(child.pid)
        self.selector.register(pidfd, selectors.EVENT_READ, lambda _mask: None)
        while True:
            for stream in self.streams:
                self.connect(stream)
            for key, mask in self.selector.select(self.timeout()):
                if key.fd == pidfd:
                    return child.wait()
                callback: Callable[[int], None] = key.data
                callback(mask)
            self.answer_poll()


def partial_accept(relay: Relay, stream: Stream) -> Callable[[int], None]:
    return lambda _mask: relay.accept(stream)


def partial_peer(relay: Relay, stream: Stream) -> Callable[[int], None]:
    return lambda mask: relay.on_peer(stream, mask)


def stream_port(text: str) -> tuple[int, int]:
    index, _, port = text.partition(":")
    return int(index), int(port)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description="Join a QEMU node's streams to its ports.")
    parser.add_argument("--link", type=Path, required=True)
    parser.add_argument("--listen", type=stream_port, action="append", default=[])
    parser.add_argument("--connect", type=stream_port, action="append", default=[])
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no QEMU command after --")
    listen = dict(args.listen)
    connect = dict(args.connect)
    streams = [Stream(i, listen.get(i), connect.get(i)) for i in range(STREAMS)]
    args.link.mkdir(parents=True, exist_ok=True)
    relay = Relay(args.link, streams)
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    try:
        status = relay.run(child)
    finally:
        shutil.rmtree(args.link, ignore_errors=True)
    return status if status >= 0 else 128 - status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
