"""One coordinator connection to one node: connect, HELLO, typed frames, errors naming the node."""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass

from nmcm_deploy.errors import DeployError
from nmcm_deploy.protocol import (
    MIN_PAYLOAD_LIMIT,
    ConnectionClosed,
    Flags,
    Frame,
    FrameReader,
    FrameWriter,
    Hello,
    HelloAck,
    Message,
    MessageType,
    ProtocolError,
    RemoteError,
    Role,
    StatusReport,
    StatusRequest,
    expect,
)
from nmcm_deploy.protocol.uart_link import open_uart_link

# The coordinator's own receive limit: WEIGHTS chunks are asked for to fit it.
COORDINATOR_LIMIT = 64 * 1024


class NodeFailed(DeployError):
    """A node stopped answering, closed its connection or reported an error."""

    def __init__(self, node: str, what: str) -> None:
        super().__init__(f"node {node!r}: {what}")
        self.node = node
        self.what = what


class HandshakeRefused(NodeFailed):
    """The node answered HELLO with ERROR: it is of another cluster, model or stage, or busy."""


@dataclass(frozen=True)
class Identity:
    cluster: str
    model_hash: bytes
    stage_index: int
    stage_count: int


class NodeLink:
    """A connection to one node's listening port, after a successful handshake."""

    def __init__(self, name: str, sock: socket.socket, ack: HelloAck, timeout: float) -> None:
        self.name = name
        self.sock = sock
        self.ack = ack
        self.reader = FrameReader(sock, max_payload=COORDINATOR_LIMIT, timeout=timeout)
        self.writer = FrameWriter(sock, timeout=timeout, peer_limit=ack.max_payload)
        self.reader.next_sequence = 1  # the HELLO_ACK was frame 0
        self.writer.next_sequence = 1  # the HELLO was frame 0

    @classmethod
    def open(
        cls,
        name: str,
        host: str,
        port: int,
        identity: Identity,
        *,
        role: Role = Role.COORDINATOR,
        connect_timeout: float = 10.0,
        timeout: float = 10.0,
        uart: bool = False,
    ) -> NodeLink:
        """Connect (retrying while the node is not listening yet) and exchange HELLO/HELLO_ACK.
        ``uart``: the port is a QEMU node's UART, where the connection starts with the link
        preambles (protocol/uart_link.py)."""
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                sock = socket.create_connection((host, port), timeout=1.0)
                break
            except OSError as exc:
                if time.monotonic() >= deadline:
                    raise NodeFailed(
                        name, f"not reachable at {host}:{port} ({exc.strerror or exc})"
                    ) from None
                time.sleep(0.05)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if uart:
                open_uart_link(sock, max(deadline - time.monotonic(), timeout))
            writer = FrameWriter(sock, timeout=timeout)
            writer.send(
                Hello(
                    role=role,
                    stage_index=identity.stage_index if role is Role.COORDINATOR else 0xFFFF,
                    stage_count=identity.stage_count,
                    max_payload=max(COORDINATOR_LIMIT, MIN_PAYLOAD_LIMIT),
                    model_hash=identity.model_hash,
                    cluster=identity.cluster,
                )
            )
            reader = FrameReader(sock, max_payload=COORDINATOR_LIMIT, timeout=timeout)
            ack = expect(reader.read(), MessageType.HELLO_ACK)
        except RemoteError as exc:
            sock.close()
            raise HandshakeRefused(name, f"refused the handshake: {exc.message}") from None
        except ProtocolError as exc:
            sock.close()
            raise NodeFailed(name, f"handshake failed: {exc.message}") from None
        assert isinstance(ack, HelloAck)
        if role is Role.COORDINATOR:
            # docs/protocol.md: the coordinator checks each node's identity against the manifest.
            found = Identity(ack.cluster, ack.model_hash, ack.stage_index, ack.stage_count)
            if found != identity:
                sock.close()
                raise NodeFailed(
                    name,
                    f"is cluster {found.cluster!r} stage {found.stage_index}/{found.stage_count}"
                    f" model {found.model_hash.hex()}, expected cluster {identity.cluster!r}"
                    f" stage {identity.stage_index}/{identity.stage_count}"
                    f" model {identity.model_hash.hex()}",
                )
        return cls(name, sock, ack, timeout)

    def send(
        self, message: Message, *, batch: int = 0, micro_batch: int = 0, flags: Flags = Flags.NONE
    ) -> None:
        try:
            self.writer.send(message, batch=batch, micro_batch=micro_batch, flags=flags)
        except ProtocolError as exc:
            raise NodeFailed(self.name, exc.message) from None

    def read(self, timeout: float | None = None) -> Frame:
        try:
            return self.reader.read(timeout)
        except ConnectionClosed:
            raise NodeFailed(self.name, "closed the connection (did the node stop?)") from None
        except ProtocolError as exc:
            raise NodeFailed(self.name, exc.message) from None

    def expect(self, *types: MessageType, timeout: float | None = None) -> tuple[Frame, Message]:
        frame = self.read(timeout)
        try:
            return frame, expect(frame, *types)
        except RemoteError as exc:
            raise NodeFailed(self.name, f"reported {exc.code.name}: {exc.reason}") from None
        except ProtocolError as exc:
            raise NodeFailed(self.name, exc.message) from None

    def status(self) -> StatusReport:
        self.send(StatusRequest())
        _, message = self.expect(MessageType.STATUS)
        assert isinstance(message, StatusReport)
        return message

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
