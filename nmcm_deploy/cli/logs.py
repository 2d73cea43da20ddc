"""`nmcm logs FILE [NODE] [-f]`: a node's log, or every node's.

Sim and QEMU nodes write their output to ``<state>/<cluster>/logs/<node>.log`` (the firmware's
log lines among it); `status -o json` names the file of each node. A board's log is its UART
(USART3 at 115200 baud, the ST-LINK's virtual COM port: docs/bring-up.md), which nmcm does not
read: the command says so instead of showing an older sim or QEMU log of the same name.
With several nodes, each line starts with the node's name. ``-f`` keeps printing what is appended
until Ctrl-C.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import IO

import typer

from nmcm_deploy.errors import NmcmError

FOLLOW_POLL_S = 0.2


def register(app: typer.Typer) -> None:
    app.command(
        "logs",
        help=(
            "Print the log of a sim or QEMU node of the manifest's cluster, or of all its nodes "
            "(each line prefixed with the node's name); -f follows it.\n\n"
            "Example: nmcm logs manifests/quickstart.yaml f413 -f"
        ),
    )(logs)


def logs(
    file: Path = typer.Argument(..., help="Manifest file.", show_default=False),
    node: str | None = typer.Argument(
        None, help="A node of the manifest (default: all).", show_default=False
    ),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing what is appended."),
    lines: int = typer.Option(
        0, "--tail", "-n", min=0, help="Only the last N lines of each log (0: all)."
    ),
) -> None:
    from nmcm_deploy.manifest import load_manifest
    from nmcm_deploy.reconcile.state import StateStore

    manifest = load_manifest(file)
    names = [n.name for n in manifest.nodes]
    if node is not None and node not in names:
        raise NmcmError(
            f"{manifest.name} has no node {node!r}", hint=f"its nodes: {', '.join(names)}"
        )
    store = StateStore(manifest.name)
    state = store.load()
    wanted = [node] if node is not None else names
    if (state.target or manifest.target) == "hardware":
        raise NmcmError(
            f"{manifest.name} runs on boards: a board's log is its UART (USART3, 115200 baud, "
            "the ST-LINK's virtual COM port), which nmcm does not read",
            hint="open the port with a serial terminal (docs/bring-up.md, 'the log')",
        )
    paths = {name: store.log_path(name) for name in wanted}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if node is not None and missing:
        raise NmcmError(
            f"node {node!r} has no log yet ({paths[node]})",
            hint=f"start the cluster with `nmcm apply {file}`",
        )
    if len(missing) == len(paths):
        raise NmcmError(
            f"no node of {manifest.name} has a log yet", hint=f"run `nmcm apply {file}` first"
        )
    present = {name: path for name, path in paths.items() if name not in missing}
    prefix = len(present) > 1
    out = sys.stdout
    handles: dict[str, IO[bytes]] = {}
    try:
        for name, path in present.items():
            handle: IO[bytes] = open(path, "rb")  # noqa: SIM115 (kept open to follow)
            handles[name] = handle
            text = handle.read().decode(errors="replace")
            shown = text.splitlines()[-lines:] if lines else text.splitlines()
            _write(out, name if prefix else None, shown)
        out.flush()
        if not follow:
            return
        pending = dict.fromkeys(handles, "")
        while True:
            for name, fh in handles.items():
                chunk = pending[name] + fh.read().decode(errors="replace")
                complete, newline, pending[name] = chunk.rpartition("\n")
                if newline:
                    _write(out, name if prefix else None, complete.split("\n"))
            out.flush()
            time.sleep(FOLLOW_POLL_S)
    except KeyboardInterrupt:
        out.flush()
    finally:
        for fh in handles.values():
            fh.close()


def _write(out: IO[str], name: str | None, lines: list[str]) -> None:
    for line in lines:
        out.write(f"{name} | {line}\n" if name else f"{line}\n")
