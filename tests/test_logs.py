"""`nmcm logs FILE [NODE] [-f] [-n N]`: the log files of a cluster's sim or QEMU nodes, read
from the state folder (written here by hand; test_apply_sim.py reads those of running nodes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import QUICKSTART, ROOT, run_nmcm

CLUSTER = "digits-f413-h7a3"  # the quick start's metadata.name
DEADLINE_S = 30.0


def logs(state: Path, *args: str | Path) -> tuple[int, str, str]:
    result = run_nmcm("logs", *args, env={"NMCM_STATE_DIR": str(state)})
    return result.code, result.stdout, result.stderr


def write_log(state: Path, node: str, text: str) -> Path:
    path = state / CLUSTER / "logs" / f"{node}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_every_node_s_lines_are_prefixed_and_one_node_s_are_not(tmp_path: Path) -> None:
    write_log(tmp_path, "f413", "a1\na2\na3\n")
    write_log(tmp_path, "h7a3", "b1\n")
    code, out, _ = logs(tmp_path, QUICKSTART)
    assert code == 0
    assert out.splitlines() == ["f413 | a1", "f413 | a2", "f413 | a3", "h7a3 | b1"]
    code, out, _ = logs(tmp_path, QUICKSTART, "f413", "-n", "2")
    assert (code, out) == (0, "a2\na3\n")


def test_unknown_nodes_missing_logs_and_boards_are_errors(tmp_path: Path) -> None:
    code, _, err = logs(tmp_path, QUICKSTART, "f999")
    assert code == 1 and "has no node 'f999'" in err and "f413, h7a3" in err
    code, _, err = logs(tmp_path, QUICKSTART)
    assert code == 1 and "no node of digits-f413-h7a3 has a log yet" in err
    write_log(tmp_path, "f413", "x\n")
    code, _, err = logs(tmp_path, QUICKSTART, "h7a3")
    assert code == 1 and "node 'h7a3' has no log yet" in err and "nmcm apply" in err
    doc = yaml.safe_load(QUICKSTART.read_text())
    doc["spec"]["target"] = "hardware"
    for i, node in enumerate(doc["spec"]["nodes"]):
        node["probe"] = {"uid": f"0669FF3834344D5043{i:06d}"}  # two boards: told apart by probe
    boards = tmp_path / "boards.yaml"
    boards.write_text(yaml.safe_dump(doc, sort_keys=False))
    code, _, err = logs(tmp_path, boards, "f413")
    assert code == 1 and "UART" in err  # not the older sim log of the same name
    assert "Traceback" not in err


def test_follow_prints_what_is_appended_until_interrupted(tmp_path: Path) -> None:
    log = write_log(tmp_path, "f413", "before\n")
    env = {**os.environ, "NMCM_STATE_DIR": str(tmp_path), "NO_COLOR": "1"}
    # Under `timeout` (which passes SIGINT on): a follower that hangs ends, and readline with it.
    command = ["timeout", str(int(DEADLINE_S)), sys.executable, "-m", "nmcm_deploy"]
    command += ["logs", str(QUICKSTART), "f413", "-f"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    ) as follower:
        assert follower.stdout is not None
        assert follower.stdout.readline() == "before\n"
        with log.open("a") as fh:
            fh.write("after 1\nafter")  # the last line is not whole yet: held back
            fh.flush()
            assert follower.stdout.readline() == "after 1\n"
            fh.write(" 2\n")
        assert follower.stdout.readline() == "after 2\n"
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=DEADLINE_S) == 0
