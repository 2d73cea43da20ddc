"""The wheel as a user installs it: built from this checkout, installed into a fresh venv (the
dependencies reached through a path file, so nothing is downloaded), and the quick start run by
its `nmcm` command from an empty folder outside the checkout: validate, apply, status, down. The
firmware the nodes are built from is the copy inside the package."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import yaml

from tests.cluster_helpers import free_port_block
from tests.conftest import QUICKSTART, ROOT


def run(
    command: list[str | Path], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"{command}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc


def test_the_wheel_runs_the_quick_start_outside_the_checkout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "NMCM_FIRMWARE_DIR")}
    env |= {"NO_COLOR": "1", "COLUMNS": "200", "NMCM_STATE_DIR": str(tmp_path / "state")}
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "-q"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", ROOT, "-w", wheels], tmp_path, env)
    (wheel,) = wheels.glob("nmcm_deploy-*.whl")

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], tmp_path, env)
    python = venv / "bin" / "python"
    # The dependencies of this environment, not its editable nmcm: a path line adds the folder
    # without running the path files inside it.
    purelib = Path(sysconfig.get_paths(vars={"base": str(venv)})["purelib"])
    (purelib / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run([python, "-m", "pip", "-q", "install", "--no-deps", wheel], tmp_path, env)

    empty = tmp_path / "work"
    empty.mkdir()
    where = run([python, "-c", "import nmcm_deploy; print(nmcm_deploy.__file__)"], empty, env)
    assert Path(where.stdout.strip()).is_relative_to(purelib)
    doc = yaml.safe_load(QUICKSTART.read_text())
    doc["spec"]["network"]["port"] = free_port_block(len(doc["spec"]["nodes"]))
    (empty / "cluster.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    nmcm = venv / "bin" / "nmcm"
    version = json.loads(run([nmcm, "version", "-o", "json"], empty, env).stdout)
    assert Path(version["firmware"]["sources"]).is_relative_to(purelib)  # the packaged copy
    assert "is valid" in run([nmcm, "validate", "cluster.yaml"], empty, env).stdout
    try:
        run([nmcm, "apply", "cluster.yaml"], empty, env)
        status = json.loads(run([nmcm, "status", "cluster.yaml", "-o", "json"], empty, env).stdout)
        (cluster,) = status["clusters"]
        assert cluster["healthy"] and cluster["job"]["status"] == "succeeded"
        assert cluster["job"]["final"]["test_accuracy"] >= 0.95
    finally:
        down = json.loads(run([nmcm, "down", "cluster.yaml", "-o", "json"], empty, env).stdout)
    assert down["stopped"] == ["f413", "h7a3"]
    assert not any((empty / name).exists() for name in (".nmcm", "build"))  # all in the state dir
