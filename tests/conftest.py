"""Shared test fixtures: running the CLI as a user does, and paths of the example manifests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
QUICKSTART = MANIFESTS / "quickstart.yaml"


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_nmcm(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Result:
    """Run `python -m nmcm_deploy ARGS` in a fresh process, as a user's shell would."""
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}
    full_env.pop("GITHUB_ACTIONS", None)
    full_env.pop("GITHUB_STEP_SUMMARY", None)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "nmcm_deploy", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=300,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def nmcm() -> type[object]:
    return run_nmcm  # type: ignore[return-value]


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """Each test's own .nmcm; whatever it left running is stopped afterwards."""
    state = tmp_path / "state"
    yield state
    for path in state.glob("*/state.json"):
        for node in json.loads(path.read_text()).get("nodes", {}).values():
            if node.get("pid"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(node["pid"], signal.SIGKILL)


# What the ARM builds and QEMU runs need; `make setup` installs them, so a missing one is a
# broken setup: the tests fail (not skip) with the reason.
ARM_TOOLS = ("qemu-system-arm", "arm-none-eabi-gcc", "cmake", "timeout")


def require_tools(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: `make setup` installs it", pytrace=False)


@pytest.fixture(scope="module")
def arm_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A state folder of the module's own (build caches included) for tests that build ARM
    images and run them under QEMU, set as NMCM_STATE_DIR while the module runs."""
    require_tools(*ARM_TOOLS)
    root = tmp_path_factory.mktemp("arm-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NMCM_STATE_DIR", str(root))
        yield root
