"""Frames: the header, encoding, and a reader that checks every frame as docs/protocol.md says.

`FrameReader` reads one frame at a time from a socket (with a deadline for the whole frame) or from
a binary stream, making each check of "Checks a receiver makes" as soon as the bytes it needs have
arrived: a stream that is not ours is refused after 4 bytes, a too-long frame before its payload is
read. Every failure is a `ProtocolError`. `FrameWriter` numbers the frames it sends.
"""

from __future__ import annotations

import io
import socket
import struct
import time
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from nmcm_deploy.protocol.errors import (
    BadCrc,
    BadHeader,
    BadMagic,
    BadVersion,
    ConnectionClosed,
    FrameTooLarge,
    Malformed,
    ProtocolTimeout,
    RemoteError,
    SequenceError,
    Truncated,
    UnexpectedMessage,
    UnknownType,
)
from nmcm_deploy.protocol.messages import ErrorMessage, Message, check_fixed, decode_message
from nmcm_deploy.protocol.spec import (
    CRC_SIZE,
    FIXED_SIZE,
    HAS_DATA,
    HEADER_SIZE,
    KNOWN_FLAGS,
    MAGIC,
    VERSION,
    Flags,
    MessageType,
)

# magic, version, type, flags, sequence, batch, micro_batch, reserved, payload_length
_FIELDS = struct.Struct("<4sBBHIIHHI")
_U32 = struct.Struct("<I")
assert _FIELDS.size + CRC_SIZE == HEADER_SIZE

DEFAULT_TIMEOUT = 10.0  # seconds for a whole frame (docs/protocol.md, "Timeouts")


@dataclass(frozen=True)
class Header:
    type: MessageType
    sequence: int
    payload_length: int
    flags: Flags = Flags.NONE
    batch: int = 0
    micro_batch: int = 0


@dataclass(frozen=True)
class Frame:
    """A frame whose header, fixed part and CRC have been checked."""

    header: Header
    payload: bytes

    @property
    def type(self) -> MessageType:
        return self.header.type

    def message(self) -> Message:
        return decode_message(self.header.type, self.payload)


def pack_header(header: Header) -> bytes:
    fields = _FIELDS.pack(
        MAGIC,
        VERSION,
        header.type,
        header.flags,
        header.sequence,
        header.batch,
        header.micro_batch,
        0,
        header.payload_length,
    )
    return fields + _U32.pack(zlib.crc32(fields))


def encode_frame(
    type_: MessageType,
    payload: bytes,
    *,
    sequence: int,
    batch: int = 0,
    micro_batch: int = 0,
    flags: Flags = Flags.NONE,
) -> bytes:
    """Header + payload + frame CRC. The payload is taken as given (see `encode` for messages)."""
    header = pack_header(Header(type_, sequence, len(payload), flags, batch, micro_batch))
    crc = zlib.crc32(payload, zlib.crc32(header))
    return header + payload + _U32.pack(crc)


def encode(
    message: Message,
    *,
    sequence: int,
    batch: int = 0,
    micro_batch: int = 0,
    flags: Flags = Flags.NONE,
) -> bytes:
    """One complete frame carrying `message`."""
    return encode_frame(
        message.TYPE,
        message.pack(),
        sequence=sequence,
        batch=batch,
        micro_batch=micro_batch,
        flags=flags,
    )


def check_header(raw: bytes, *, max_payload: int) -> Header:
    """Checks 1-7 of docs/protocol.md on a whole 28-byte header (the sequence is the reader's)."""
    if raw[:4] != MAGIC:
        raise BadMagic(f"bad magic {raw[:4]!r}, expected {MAGIC!r}")
    if raw[4] != VERSION:
        raise BadVersion(f"protocol version {raw[4]}, this side speaks {VERSION}", detail=raw[4])
    _, _, type_, flags, sequence, batch, micro_batch, reserved, length = _FIELDS.unpack_from(raw)
    crc = _U32.unpack_from(raw, _FIELDS.size)[0]
    if zlib.crc32(raw[: _FIELDS.size]) != crc:
        raise BadHeader("header CRC mismatch")
    if reserved != 0 or flags & ~KNOWN_FLAGS:
        raise BadHeader(f"reserved header bits set (flags 0x{flags:04x}, reserved {reserved})")
    try:
        kind = MessageType(type_)
    except ValueError:
        raise UnknownType(f"unknown message type 0x{type_:02x}", detail=type_) from None
    if length > max_payload:
        raise FrameTooLarge(
            f"{kind.name} payload of {length} bytes exceeds the limit of {max_payload}",
            detail=length,
        )
    fixed = FIXED_SIZE[kind]
    if length < fixed or (kind not in HAS_DATA and length != fixed):
        raise Malformed(
            f"{kind.name} payload of {length} bytes, fixed part is {fixed}", detail=length
        )
    return Header(kind, sequence, length, Flags(flags), batch, micro_batch)


class _Source:
    """Reads from a socket (honouring a deadline) or a binary stream (no timeouts)."""

    def __init__(self, source: socket.socket | BinaryIO) -> None:
        self._sock = source if isinstance(source, socket.socket) else None
        self._stream = None if isinstance(source, socket.socket) else source

    def read_into(self, view: memoryview, deadline: float) -> int:
        """Some bytes into `view` (0 at end of stream)."""
        if self._stream is not None:
            chunk = self._stream.read(len(view))
            view[: len(chunk)] = chunk
            return len(chunk)
        assert self._sock is not None
        # Past the deadline the socket is read without waiting: bytes already here still count.
        remaining = max(deadline - time.monotonic(), 0.0)
        try:
            self._sock.settimeout(remaining)
            return self._sock.recv_into(view)
        except (TimeoutError, BlockingIOError):
            raise ProtocolTimeout("timed out waiting for a frame") from None
        except OSError as exc:
            raise ConnectionClosed(f"connection failed: {exc}") from None


class FrameReader:
    """Reads and checks frames from one direction of one connection.

    `max_payload` is this side's receive limit; `timeout` (seconds) bounds each whole frame when
    reading a socket (0 polls: only bytes that have arrived are taken). With `check_sequence`,
    frames must be numbered 0, 1, 2, ...

    After a ProtocolError the stream cannot be trusted and is to be closed — except a
    ProtocolTimeout whose `detail` is 0: no byte of a frame had arrived, so reading may go on.
    """

    def __init__(
        self,
        source: socket.socket | BinaryIO,
        *,
        max_payload: int,
        timeout: float = DEFAULT_TIMEOUT,
        check_sequence: bool = True,
    ) -> None:
        self._source = _Source(source)
        self.max_payload = max_payload
        self.timeout = timeout
        self.check_sequence = check_sequence
        self.next_sequence = 0

    def _fill(self, buf: bytearray, start: int, end: int, deadline: float, *, first: bool) -> None:
        view = memoryview(buf)
        got = start
        while got < end:
            try:
                n = self._source.read_into(view[got:end], deadline)
            except ProtocolTimeout as exc:
                exc.detail = got  # bytes of the frame consumed: 0 leaves the stream usable
                raise
            if n == 0:
                if first and got == 0:
                    raise ConnectionClosed("connection closed")
                raise Truncated(f"stream ended inside a frame after {got} bytes", detail=got)
            got += n

    def read(self, timeout: float | None = None) -> Frame:
        """The next frame; `timeout` overrides the reader's for this frame."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        head = bytearray(HEADER_SIZE)
        self._fill(head, 0, 4, deadline, first=True)
        if bytes(head[:4]) != MAGIC:
            raise BadMagic(f"bad magic {bytes(head[:4])!r}, expected {MAGIC!r}")
        self._fill(head, 4, 5, deadline, first=False)
        if head[4] != VERSION:
            raise BadVersion(
                f"protocol version {head[4]}, this side speaks {VERSION}", detail=head[4]
            )
        self._fill(head, 5, HEADER_SIZE, deadline, first=False)
        header = check_header(bytes(head), max_payload=self.max_payload)
        if self.check_sequence and header.sequence != self.next_sequence:
            raise SequenceError(
                f"frame {header.sequence} where {self.next_sequence} was expected",
                detail=self.next_sequence,
            )
        body = bytearray(HEADER_SIZE + header.payload_length + CRC_SIZE)
        body[:HEADER_SIZE] = head
        fixed_end = HEADER_SIZE + FIXED_SIZE[header.type]
        self._fill(body, HEADER_SIZE, fixed_end, deadline, first=False)
        data_len = header.payload_length - FIXED_SIZE[header.type]
        check_fixed(header.type, bytes(body[HEADER_SIZE:fixed_end]), data_len)
        self._fill(body, fixed_end, len(body), deadline, first=False)
        end = HEADER_SIZE + header.payload_length
        if zlib.crc32(memoryview(body)[:end]) != _U32.unpack_from(body, end)[0]:
            raise BadCrc(f"{header.type.name} frame CRC mismatch")
        self.next_sequence = (header.sequence + 1) & 0xFFFFFFFF
        return Frame(header, bytes(body[HEADER_SIZE:end]))


class FrameWriter:
    """Sends frames on a socket, numbering them. `peer_limit` is the peer's receive limit (from its
    HELLO / HELLO_ACK): a frame over it is refused here rather than by the peer."""

    def __init__(
        self, sock: socket.socket, *, timeout: float = 5.0, peer_limit: int | None = None
    ) -> None:
        self._sock = sock
        self.timeout = timeout
        self.peer_limit = peer_limit
        self.next_sequence = 0

    def send_frame(
        self,
        type_: MessageType,
        payload: bytes,
        *,
        batch: int = 0,
        micro_batch: int = 0,
        flags: Flags = Flags.NONE,
    ) -> int:
        """Sends one frame; returns its sequence number."""
        if self.peer_limit is not None and len(payload) > self.peer_limit:
            raise FrameTooLarge(
                f"{type_.name} payload of {len(payload)} bytes exceeds the peer's limit of "
                f"{self.peer_limit}",
                detail=len(payload),
            )
        sequence = self.next_sequence
        data = encode_frame(
            type_, payload, sequence=sequence, batch=batch, micro_batch=micro_batch, flags=flags
        )
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(data)
        except TimeoutError:
            raise ProtocolTimeout(f"timed out sending {type_.name}") from None
        except OSError as exc:
            raise ConnectionClosed(f"connection failed while sending {type_.name}: {exc}") from None
        self.next_sequence = (sequence + 1) & 0xFFFFFFFF
        return sequence

    def send(
        self,
        message: Message,
        *,
        batch: int = 0,
        micro_batch: int = 0,
        flags: Flags = Flags.NONE,
    ) -> int:
        return self.send_frame(
            message.TYPE, message.pack(), batch=batch, micro_batch=micro_batch, flags=flags
        )


def decode_frames(data: bytes, *, max_payload: int, check_sequence: bool = True) -> list[Frame]:
    """Every frame in `data`, which must end on a frame boundary."""
    reader = FrameReader(io.BytesIO(data), max_payload=max_payload, check_sequence=check_sequence)
    frames: list[Frame] = []
    while True:
        try:
            frames.append(reader.read())
        except ConnectionClosed:
            return frames


def expect(frame: Frame, *types: MessageType) -> Message:
    """The frame's message if its type is one of `types`; a peer's ERROR raises RemoteError."""
    if frame.type is MessageType.ERROR:
        error = ErrorMessage.unpack(frame.payload)
        raise RemoteError(error.code, error.reason, detail=error.detail)
    if types and frame.type not in types:
        wanted = ", ".join(t.name for t in types)
        raise UnexpectedMessage(f"got {frame.type.name} where {wanted} was expected")
    return frame.message()
