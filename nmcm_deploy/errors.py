"""Typed errors raised by domain code and turned into one readable line at the CLI edge.

Domain code never prints and never exits: it raises one of these. The CLI (``nmcm_deploy.cli``)
prints them through ``nmcm_deploy.terminal`` and exits with their ``exit_code``.
"""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2  # `plan --detailed-exitcode` only
EXIT_USAGE = 64  # usage errors must not collide with 2 = changes (BSD sysexits EX_USAGE)


@dataclass(frozen=True)
class Location:
    """Where in a manifest something is: file, 1-based line and column, and a JSON path."""

    file: str
    line: int = 0
    column: int = 0
    path: str = ""

    def prefix(self) -> str:
        if self.line:
            return f"{self.file}:{self.line}:{self.column}"
        return self.file


@dataclass(frozen=True)
class Problem:
    """One finding about a manifest, with its location."""

    location: Location
    message: str

    def __str__(self) -> str:
        path = f" {self.location.path}:" if self.location.path else ""
        return f"{self.location.prefix()}:{path} {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {
            "file": self.location.file,
            "line": self.location.line,
            "column": self.location.column,
            "path": self.location.path,
            "message": self.message,
        }


class NmcmError(Exception):
    """Base of every error a user can cause or fix; carries an exit code."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ManifestInvalid(NmcmError):
    """A manifest failed validation; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(f"{len(problems)} problem(s) in manifest")
        self.problems = problems


class ModelError(NmcmError):
    """The model cannot be compiled: an unsupported op, a shape that does not work, a bad file."""

    def __init__(self, message: str, *, where: str = "", hint: str | None = None) -> None:
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.where = where


class BlobError(NmcmError):
    """A blob failed its checks (magic, version, sizes, CRC)."""


class BuildError(NmcmError):
    """A firmware build failed."""


class DeployError(NmcmError):
    """Starting, flashing or talking to nodes failed."""


class ChangesPending(Exception):
    """Raised by `plan --detailed-exitcode` when there are changes: the CLI exits with 2."""
