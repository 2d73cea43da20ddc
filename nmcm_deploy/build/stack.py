"""The worst stack depth of a firmware image, from the compiler's own figures.

The ARM builds compile with ``-fcallgraph-info=su``: beside each object GCC writes a ``.ci`` file
(VCG text) with one node per function (its frame in bytes, ``static`` when fixed) and one edge
per direct call it left in the code (calls it inlined are part of the caller's frame). This
module reads those files, walks the call graph from the image's entry points (the reset handler,
which calls main, and every exception handler) and returns the deepest path.

What the graph cannot say is reported, not guessed away:

* **indirect calls** (function pointers, virtual calls: the layer table, the transports): each
  such site is bounded by the deepest function that could be its target, which is taken to be
  any function of the image reachable from nowhere but an indirect call (the callbacks and the
  implementations behind the interfaces) — the sites are listed;
* **recursion**: a cycle has no bound; the functions on it are listed and the depth is that of
  one trip round the cycle;
* **functions without figures** (the C library, compiler helpers): each is given
  ``UNKNOWN_FRAME`` bytes, and they are listed;
* **dynamic frames** (``alloca``, variable-length arrays): listed; their static part is counted.

An exception handler runs on the same stack (MSP) as the code it interrupts: the report adds the
deepest handler and the frame the core pushes for it (with the FPU context, 26 words). Handlers
are taken not to nest (the ports give them one priority).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The frame a Cortex-M4F/M7 pushes on exception entry with a lazily stacked FPU context: R0-R3,
# R12, LR, PC, xPSR, S0-S15, FPSCR and a reserved word (ARMv7-M ARM, B1.5.7).
EXCEPTION_FRAME = 26 * 4
# Bytes assumed for a function the compiler gave no figure for (a C library routine: newlib's
# memcpy, memset, expf and the ABI helpers use well under this).
UNKNOWN_FRAME = 256
INDIRECT = "__indirect_call"
# The stack a board image reserves: the worst path plus a quarter and 1 KiB, rounded up to 512 B.
# The margin covers what the call graph cannot see: a library routine deeper than UNKNOWN_FRAME,
# a compiler that lays out a frame differently from what it reported.
MARGIN_FRACTION = 0.25
MARGIN_BYTES = 1024
STACK_ALIGN = 512

_NODE = re.compile(r'node:\s*\{\s*title:\s*"([^"]+)"\s*label:\s*"([^"]*)"')
_EDGE = re.compile(r'edge:\s*\{\s*sourcename:\s*"([^"]+)"\s*targetname:\s*"([^"]+)"')
_FRAME = re.compile(r"(\d+) bytes \(([a-z,]+)\)")


_STRUCTOR = re.compile(r"([CD])1(?=E)")


def _canonical(title: str) -> str:
    """One name per function: a declaration with an assembler name (``*main``) is that name, and
    a complete-object constructor or destructor (C1, D1), which GCC emits as an alias of the
    base-object one (C2, D2), is that one."""
    return _STRUCTOR.sub(r"\g<1>2", title.lstrip("*"))


@dataclass
class CallGraph:
    """Functions (their frame in bytes, None when the compiler gave none), whether a frame is
    dynamic, their readable names, and who calls whom directly."""

    frames: dict[str, int | None] = field(default_factory=dict)
    dynamic: set[str] = field(default_factory=set)
    names: dict[str, str] = field(default_factory=dict)
    calls: dict[str, set[str]] = field(default_factory=dict)

    def add_text(self, text: str) -> None:
        """Adds one ``.ci`` file. A function defined in several objects (an inline function
        kept out of line) keeps its largest frame."""
        for title, label in ((_canonical(t), lb) for t, lb in _NODE.findall(text)):
            if title == INDIRECT:
                continue
            frame = _FRAME.search(label)
            self.names.setdefault(title, label.split("\\n", 1)[0])
            if frame is None:
                self.frames.setdefault(title, None)
                continue
            size = int(frame.group(1))
            known = self.frames.get(title)
            self.frames[title] = size if known is None else max(known, size)
            if "dynamic" in frame.group(2) and "bounded" not in frame.group(2):
                self.dynamic.add(title)
        for source, target in _EDGE.findall(text):
            source, target = _canonical(source), _canonical(target)
            self.calls.setdefault(source, set()).add(target)
            self.frames.setdefault(source, None)
            if target != INDIRECT:
                self.frames.setdefault(target, None)


def read_call_graph(files: Iterable[Path]) -> CallGraph:
    graph = CallGraph()
    for path in sorted(files):
        graph.add_text(path.read_text(errors="replace"))
    return graph


@dataclass(frozen=True)
class StackReport:
    """The deepest stack of an image: its bytes, the path that reaches them (entry first), and
    what the figure rests on."""

    worst_bytes: int
    path: tuple[str, ...]
    main_bytes: int  # the reset handler's deepest path
    handler_bytes: int  # the deepest exception handler, with the frame the core pushes
    indirect_calls: tuple[str, ...]  # functions that call through a pointer
    indirect_bound_bytes: int  # what such a call is taken to add
    recursion: tuple[str, ...]  # functions on a call cycle (none: the bound is exact)
    unknown: tuple[str, ...]  # callees without a figure, counted as UNKNOWN_FRAME each
    dynamic: tuple[str, ...]  # functions with a dynamic frame

    def as_dict(self) -> dict[str, Any]:
        return {
            "worst_bytes": self.worst_bytes,
            "path": list(self.path),
            "main_bytes": self.main_bytes,
            "handler_bytes": self.handler_bytes,
            "indirect_calls": list(self.indirect_calls),
            "indirect_bound_bytes": self.indirect_bound_bytes,
            "recursion": list(self.recursion),
            "unknown_functions": list(self.unknown),
            "unknown_frame_bytes": UNKNOWN_FRAME,
            "dynamic_frames": list(self.dynamic),
            "source": "gcc -fcallgraph-info=su",
        }


class _Walker:
    def __init__(self, graph: CallGraph, indirect_bound: int) -> None:
        self.graph = graph
        self.indirect_bound = indirect_bound
        self.memo: dict[str, tuple[int, tuple[str, ...]]] = {}
        self.on_path: list[str] = []
        self.recursion: set[str] = set()
        self.unknown: set[str] = set()

    def frame(self, fn: str) -> int:
        size = self.graph.frames.get(fn)
        if size is None:
            self.unknown.add(fn)
            return UNKNOWN_FRAME
        return size

    def deepest(self, fn: str) -> tuple[int, tuple[str, ...]]:
        """The deepest stack from entering ``fn``, and the path to it."""
        if fn in self.memo:
            return self.memo[fn]
        if fn in self.on_path:  # a cycle: counted once round, its functions reported
            self.recursion.update(self.on_path[self.on_path.index(fn) :])
            return 0, ()
        self.on_path.append(fn)
        best, best_path = 0, tuple[str, ...]()
        for callee in sorted(self.graph.calls.get(fn, ())):
            path: tuple[str, ...]
            if callee == INDIRECT:
                depth, path = self.indirect_bound, ("(indirect call)",)
            else:
                depth, path = self.deepest(callee)
            if depth > best:
                best, best_path = depth, path
        self.on_path.pop()
        result = (self.frame(fn) + best, (self.graph.names.get(fn, fn), *best_path))
        self.memo[fn] = result
        return result


def _handlers(graph: CallGraph) -> list[str]:
    return sorted(f for f in graph.frames if f.endswith("_Handler") and f != "Reset_Handler")


def analyse(graph: CallGraph, entry: str = "Reset_Handler") -> StackReport:
    """The worst stack of the image whose call graph is ``graph``, entered at ``entry``."""
    if entry not in graph.frames:
        raise ValueError(
            f"the call graph has no {entry!r}: was the image compiled with -fcallgraph-info=su?"
        )
    called = {callee for callees in graph.calls.values() for callee in callees}
    roots = {entry, *_handlers(graph)}
    # Targets of indirect calls: the functions nothing calls directly and no entry point is.
    targets = [f for f in graph.frames if f not in called and f not in roots]
    bound_walker = _Walker(graph, 0)
    indirect_bound = max((bound_walker.deepest(t)[0] for t in targets), default=0)
    walker = _Walker(graph, indirect_bound)
    main_bytes, main_path = walker.deepest(entry)
    handler_bytes, handler_path = 0, tuple[str, ...]()
    for handler in _handlers(graph):
        depth, path = walker.deepest(handler)
        if depth + EXCEPTION_FRAME > handler_bytes:
            handler_bytes, handler_path = depth + EXCEPTION_FRAME, path
    indirect = sorted(graph.names.get(f, f) for f, c in graph.calls.items() if INDIRECT in c)
    path = main_path + ((f"+ exception: {handler_path[0]}",) if handler_path else ())
    return StackReport(
        worst_bytes=main_bytes + handler_bytes,
        path=path,
        main_bytes=main_bytes,
        handler_bytes=handler_bytes,
        indirect_calls=tuple(indirect),
        indirect_bound_bytes=indirect_bound,
        recursion=tuple(
            sorted(graph.names.get(f, f) for f in walker.recursion | bound_walker.recursion)
        ),
        unknown=tuple(sorted(graph.names.get(f, f) for f in walker.unknown | bound_walker.unknown)),
        dynamic=tuple(sorted(graph.names.get(f, f) for f in graph.dynamic)),
    )


def reserve_bytes(report: StackReport) -> int | None:
    """The stack to reserve for an image with this report, or None when the report gives no
    bound (recursion, dynamic frames): the board's default then stays."""
    if report.recursion or report.dynamic:
        return None
    want = report.worst_bytes * (1 + MARGIN_FRACTION) + MARGIN_BYTES
    return int(-(-want // STACK_ALIGN) * STACK_ALIGN)


def image_stack(tree: Path) -> StackReport:
    """The stack report of the image built in the CMake tree ``tree`` (every ``.ci`` file in it:
    functions the image does not link are not reachable from its entry points)."""
    return analyse(read_call_graph(tree.rglob("*.ci")))


def report_of(data: Mapping[str, Any]) -> StackReport:
    """A report back from ``as_dict``."""
    return StackReport(
        worst_bytes=int(data["worst_bytes"]),
        path=tuple(data["path"]),
        main_bytes=int(data["main_bytes"]),
        handler_bytes=int(data["handler_bytes"]),
        indirect_calls=tuple(data["indirect_calls"]),
        indirect_bound_bytes=int(data["indirect_bound_bytes"]),
        recursion=tuple(data["recursion"]),
        unknown=tuple(data["unknown_functions"]),
        dynamic=tuple(data["dynamic_frames"]),
    )
