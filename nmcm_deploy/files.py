"""Writing files so that a reader sees the old content or the new, never a part of either.

Used for what nmcm records and exports: the cluster state (reconcile/state.py) and the per-node
blobs, headers and memory plans (compiler/cluster.py).
"""

from __future__ import annotations

import os
from pathlib import Path


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, rename it over
    ``path``, then flush the folder so that the rename survives a power cut too. Creates the
    folder if need be; an OSError (read-only or full file system, say) propagates as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
