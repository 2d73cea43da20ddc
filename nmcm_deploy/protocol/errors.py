"""Typed protocol errors. Every failure to read or decode a frame is one of these, never a bare
struct.error, ValueError or socket exception, so a caller needs one `except ProtocolError`."""

from __future__ import annotations

from nmcm_deploy.errors import NmcmError
from nmcm_deploy.protocol.spec import ErrorCode


class ProtocolError(NmcmError):
    """A frame was refused, a stream broke, or a peer reported an error.

    `code` is the ERROR code a receiver sends for it (docs/protocol.md, "ERROR"); `detail` the
    offending value where one helps (the frame length, the expected sequence), else 0.
    """

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, detail: int = 0, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.detail = detail

    @property
    def kind(self) -> str:
        """Stable short name, as in the test vectors: "bad_magic", "too_large", ..."""
        return self.code.name.lower()


class BadMagic(ProtocolError):
    code = ErrorCode.BAD_MAGIC


class BadVersion(ProtocolError):
    code = ErrorCode.BAD_VERSION


class BadHeader(ProtocolError):
    code = ErrorCode.BAD_HEADER


class UnknownType(ProtocolError):
    code = ErrorCode.UNKNOWN_TYPE


class FrameTooLarge(ProtocolError):
    code = ErrorCode.TOO_LARGE


class Malformed(ProtocolError):
    code = ErrorCode.MALFORMED


class BadCrc(ProtocolError):
    code = ErrorCode.BAD_CRC


class SequenceError(ProtocolError):
    code = ErrorCode.SEQUENCE


class Truncated(ProtocolError):
    """The stream ended inside a frame."""

    code = ErrorCode.TRUNCATED


class ProtocolTimeout(ProtocolError):
    code = ErrorCode.TIMEOUT


class UnexpectedMessage(ProtocolError):
    """A well-formed frame that is not what the caller waited for."""

    code = ErrorCode.UNEXPECTED


class ConnectionClosed(ProtocolError):
    """The peer closed the stream between frames (or the socket failed)."""

    code = ErrorCode.NONE

    @property
    def kind(self) -> str:
        return "closed"


class RemoteError(ProtocolError):
    """The peer sent ERROR: its code, detail and reason."""

    def __init__(self, code: ErrorCode, reason: str, *, detail: int = 0) -> None:
        super().__init__(f"peer reported {code.name}: {reason}", detail=detail)
        self.code = code
        self.reason = reason


# Decode failures by code, so that one table maps a check to the error it raises.
ERRORS_BY_CODE: dict[ErrorCode, type[ProtocolError]] = {
    cls.code: cls
    for cls in (
        BadMagic,
        BadVersion,
        BadHeader,
        UnknownType,
        FrameTooLarge,
        Malformed,
        BadCrc,
        SequenceError,
        Truncated,
        ProtocolTimeout,
        UnexpectedMessage,
    )
}
