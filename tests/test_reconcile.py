"""Reconcile behaviour around the edges: the lock, interruption, GitHub Actions summaries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from nmcm_deploy.reconcile.state import StateStore
from tests.cluster_helpers import write_manifest
from tests.conftest import ROOT, run_nmcm


def test_second_apply_names_the_lock_holder(tmp_path: Path, state_dir: Path) -> None:
    manifest = write_manifest(tmp_path, name="locked", stages=[("f413", 0, 5)])
    os.environ["NMCM_STATE_DIR"] = str(state_dir)
    try:
        with StateStore("locked").lock("apply"):
            result = run_nmcm("apply", manifest, env={"NMCM_STATE_DIR": str(state_dir)})
    finally:
        del os.environ["NMCM_STATE_DIR"]
    assert result.code == 1
    assert f"cluster 'locked' is locked by `nmcm apply` (pid {os.getpid()}" in result.stderr
    assert "Traceback" not in result.output


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupted_apply_is_continued_by_the_next(tmp_path: Path, state_dir: Path) -> None:
    manifest = write_manifest(
        tmp_path, name="interrupted", stages=[("f413", 0, 3), ("h7a3", 4, 5)], epochs=40
    )
    env = {**os.environ, "NMCM_STATE_DIR": str(state_dir), "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmcm_deploy", "apply", str(manifest)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a test run started in the background inherits SIGINT ignored.
        preexec_fn=_sigint_default,
    )
    state_file = state_dir / "interrupted" / "state.json"

    def recorded() -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(state_file.read_text()) if state_file.exists() else {}
        return doc

    # Interrupt at a point this test observes: training has begun (an epoch ended), and h7a3 is
    # frozen, so the job can neither finish nor move on (its timeouts are a minute away) when the
    # interrupt comes, whatever the machine's speed.
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("epoch 1/40"):
            break
    assert seen and seen[-1].startswith("epoch 1/40"), "".join(seen)
    frozen = recorded()["nodes"]["h7a3"]["pid"]
    os.kill(frozen, signal.SIGSTOP)
    try:
        assert recorded()["job"]["status"] == "running"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        os.kill(frozen, signal.SIGCONT)
    assert proc.returncode == 130, err
    state = json.loads(state_file.read_text())
    assert state["job"]["status"] == "failed"
    assert set(state["nodes"]) == {"f413", "h7a3"}  # both were recorded before training began

    # The nodes are up to date and running: only the job is left to do.
    manifest.write_text(manifest.read_text().replace("epochs: 40", "epochs: 1"))
    plan = run_nmcm("plan", manifest, "-o", "json", env={"NMCM_STATE_DIR": str(state_dir)})
    assert [c["op"] for c in json.loads(plan.stdout)["changes"]] == ["train"]
    pids = {n: v["pid"] for n, v in state["nodes"].items()}
    again = run_nmcm("apply", manifest, env={"NMCM_STATE_DIR": str(state_dir)})
    assert again.code == 0, again.output
    after = json.loads(state_file.read_text())
    assert {n: v["pid"] for n, v in after["nodes"].items()} == pids  # nothing restarted
    assert after["job"]["status"] == "succeeded"


def test_plan_and_apply_write_the_github_job_summary(tmp_path: Path, state_dir: Path) -> None:
    manifest = write_manifest(tmp_path, name="summary", stages=[("f413", 0, 5)])
    summary = tmp_path / "summary.md"
    env = {
        "NMCM_STATE_DIR": str(state_dir),
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    plan = run_nmcm("plan", manifest, "--detailed-exitcode", env=env)
    assert plan.code == 2
    assert "## nmcm plan: `summary` (sim)" in summary.read_text()
    assert "| create | `nodes.f413` |" in summary.read_text()
    apply = run_nmcm("apply", manifest, env=env)
    assert apply.code == 0, apply.output
    text = summary.read_text()
    assert "## nmcm: cluster `summary` (sim)" in text
    assert "| f413 | stm32f413zh | 0 | 0-5 |" in text
    assert run_nmcm("down", manifest, env=env).code == 0
