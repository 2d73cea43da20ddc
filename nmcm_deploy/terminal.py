"""The one place that talks to the terminal: Rich console, errors, tables, JSON, CI annotations.

Output is plain (no colour, no live progress) when stdout is not a terminal, when ``NO_COLOR`` is
set, or when the command emits JSON. In GitHub Actions, errors also become ``::error`` annotations.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from nmcm_deploy.errors import NmcmError, Problem

JSON_FORMAT_VERSION = 1

_stdout: Console | None = None
_stderr: Console | None = None


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))


# Logs (CI, files, pipes) are read wide; Rich would assume 80 columns and fold the tables.
LOG_WIDTH = 160


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr, no_color=_no_color(), highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = LOG_WIDTH
    return console


def out() -> Console:
    global _stdout
    if _stdout is None:
        _stdout = _console(stderr=False)
    return _stdout


def err() -> Console:
    global _stderr
    if _stderr is None:
        _stderr = _console(stderr=True)
    return _stderr


def interactive() -> bool:
    """Live progress only where a person watches a terminal."""
    return out().is_terminal and not _no_color() and os.environ.get("TERM") != "dumb"


def in_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def _escape_annotation(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def annotate(problem: Problem) -> None:
    """A GitHub Actions error annotation on the problem's file and line."""
    loc = problem.location
    props = f"file={loc.file}"
    if loc.line:
        props += f",line={loc.line},col={loc.column}"
    message = f"{loc.path}: {problem.message}" if loc.path else problem.message
    print(f"::error {props}::{_escape_annotation(message)}", flush=True)


def problems(items: Sequence[Problem]) -> None:
    for p in items:
        err().print(str(p), markup=False)
        if in_github_actions():
            annotate(p)


def error(exc: NmcmError | str) -> None:
    message = exc if isinstance(exc, str) else exc.message
    err().print(f"[bold red]error:[/] {_markup_escape(message)}")
    hint = None if isinstance(exc, str) else exc.hint
    if hint:
        err().print(f"[dim]hint:[/] {_markup_escape(hint)}")
    if in_github_actions():
        print(f"::error::{_escape_annotation(message)}", flush=True)


def warning(message: str) -> None:
    err().print(f"[bold yellow]warning:[/] {_markup_escape(message)}")
    if in_github_actions():
        print(f"::warning::{_escape_annotation(message)}", flush=True)


def info(message: str) -> None:
    err().print(message, markup=False)


def line(message: str) -> None:
    """A line of a command's human output, on stdout beside its tables (no markup)."""
    out().print(message, markup=False, highlight=False)


def success(message: str) -> None:
    out().print(f"[green]✓[/] {_markup_escape(message)}")


def _markup_escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def emit_json(data: dict[str, Any]) -> None:
    """Data on stdout, with the format version, nothing else on stdout."""
    doc = {"format_version": JSON_FORMAT_VERSION, **data}
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    t = Table(title=_markup_escape(title), title_justify="left", show_lines=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    for row in rows:
        t.add_row(*(str(v) for v in row))
    out().print(t)


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.2f} MiB"


def step_summary(markdown: str) -> None:
    """Append to the GitHub Actions job summary, if there is one."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path and in_github_actions():
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(markdown.rstrip() + "\n\n")
