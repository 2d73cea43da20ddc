"""Where the firmware sources are and a digest of them, the root of every build key."""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from pathlib import Path

from nmcm_deploy.errors import BuildError

# Folders whose content never goes into an image.
_SKIP_DIRS = {"tests", "__pycache__", ".git"}


def firmware_dir() -> Path:
    """The firmware source tree: ``$NMCM_FIRMWARE_DIR``, the copy shipped in the package, or the
    repository's ``firmware/`` next to the package."""
    env = os.environ.get("NMCM_FIRMWARE_DIR")
    candidates = [Path(env)] if env else []
    here = Path(__file__).resolve().parents[1]
    candidates += [here / "firmware", here.parent / "firmware"]
    for c in candidates:
        if (c / "CMakeLists.txt").is_file():
            return c
    raise BuildError(
        "the firmware sources were not found",
        hint="set NMCM_FIRMWARE_DIR to the firmware/ folder of an nmcm checkout",
    )


@functools.cache
def source_digest(root: Path) -> str:
    """SHA-256 over every firmware source file (path and content), tests excluded."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or _SKIP_DIRS.intersection(rel.parts):
            continue
        h.update(str(rel).encode() + b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


@functools.cache
def compiler_id(compiler: str) -> str:
    """The compiler's version line: a new compiler is a new build."""
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BuildError(
            f"{compiler} is not usable ({exc})", hint="run `make setup` to install the toolchain"
        ) from None
    return out.stdout.splitlines()[0] if out.stdout else compiler
