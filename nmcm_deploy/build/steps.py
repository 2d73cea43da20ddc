"""Running build steps: one logged command at a time, under a lock on the build folder.

A build folder (the host libraries, an ARM build tree) is used by one build at a time. The lock
is an flock that the build's own processes inherit, so a build that outlives the apply that
started it (the apply was killed, its cmake not) still holds it: the next apply waits for that
build to end instead of building in the same folder at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from nmcm_deploy.errors import BuildError


@contextlib.contextmanager
def build_lock(folder: Path) -> Iterator[int]:
    """Hold the lock of ``folder`` (the file beside it, ``<folder>.lock``); yields its descriptor
    for run_step to hand on to the build's processes."""
    lock = folder.with_name(folder.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield fd
    finally:
        os.close(fd)


def run_step(cmd: list[str], what: str, log: Path, lock_fd: int | None = None) -> None:
    """Run one build command, its output appended to ``log``; BuildError with the log's tail if
    it fails. The command inherits the build lock, if one is given."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        proc = subprocess.run(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=() if lock_fd is None else (lock_fd,),
        )
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise BuildError(f"{what} failed (log: {log}):\n" + "\n".join(tail))
