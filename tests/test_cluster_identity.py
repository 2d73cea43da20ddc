"""A cluster works only with its own nodes: ports another process holds are named before anything
starts, the node that answers is the one apply started, `status` and `down` of one cluster
neither read nor stop another's, a node left unrecorded by a killed apply is taken over, and a
frozen node or a handful of idle connections are told apart from a dead one."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nmcm_deploy.reconcile.state import ClusterState, NodeState, StateStore
from nmcm_deploy.targets import ports, sim
from tests.cluster_helpers import wait_for, write_manifest
from tests.conftest import ROOT, Result, run_nmcm

TWO_NODES = [("f413", 0, 3), ("h7a3", 4, 5)]


def nmcm(state: Path, *args: str | Path) -> Result:
    return run_nmcm(*args, env={"NMCM_STATE_DIR": str(state)})


def recorded(state: Path, cluster: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((state / cluster / "state.json").read_text())
    return doc


def renamed(manifest: Path, name: str, folder: Path) -> Path:
    """The same cluster under another name (same nodes, same ports)."""
    doc = yaml.safe_load(manifest.read_text())
    doc["metadata"]["name"] = name
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_port_held_by_another_process_is_named_before_any_node_starts(
    tmp_path: Path, state_dir: Path
) -> None:
    manifest = write_manifest(tmp_path, name="taken", stages=TWO_NODES)
    port = yaml.safe_load(manifest.read_text())["spec"]["network"]["port"] + 1  # h7a3's
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = nmcm(state_dir, "apply", manifest)
    assert result.code == 1, result.output
    assert f"port {port} for node 'h7a3' is in use by pid {os.getpid()}" in result.stderr
    assert "Traceback" not in result.output
    assert "h7a3" not in recorded(state_dir, "taken")["nodes"]
    nmcm(state_dir, "down", manifest)


def test_another_cluster_on_the_same_ports_is_refused_and_left_alone(
    tmp_path: Path, state_dir: Path
) -> None:
    a = write_manifest(tmp_path, name="cluster-a", stages=TWO_NODES)
    assert nmcm(state_dir, "apply", a).code == 0
    a_pids = {n: v["pid"] for n, v in recorded(state_dir, "cluster-a")["nodes"].items()}
    b = renamed(a, "cluster-b", tmp_path / "b")
    other_state = tmp_path / "elsewhere"
    for manifest, state in ((b, state_dir), (a, other_state)):  # another name; another folder
        result = nmcm(state, "apply", manifest)
        assert result.code == 1, result.output
        assert f"is in use by pid {a_pids['f413']}" in result.stderr, result.stderr
        assert "Traceback" not in result.output
    # B's tools can neither stop nor read A's nodes, and say so.
    # As B's state would read had a node of B started on that port and died (a dead pid).
    gone = subprocess.Popen(["true"])
    gone.wait()
    node = NodeState(**recorded(state_dir, "cluster-a")["nodes"]["f413"])
    node.pid = gone.pid
    StateStore("cluster-b", state_dir).save(ClusterState("cluster-b", nodes={"f413": node}))
    down = nmcm(state_dir, "down", b)
    assert down.code == 1, down.output
    assert "not this cluster's" in down.stderr and "left running" in down.stderr
    status = nmcm(state_dir, "status", a, "-o", "json")
    assert status.code == 0, status.output
    nodes = json.loads(status.stdout)["clusters"][0]["nodes"]
    assert {n["name"]: n["pid"] for n in nodes} == a_pids
    assert {n["health"] for n in nodes} == {"Healthy"}
    assert nmcm(state_dir, "down", a).code == 0


def test_nodes_left_unrecorded_are_taken_over(tmp_path: Path, state_dir: Path) -> None:
    """Node processes an apply started but did not record (it was killed in between): the next
    apply stops them and records the nodes it starts, so that one process answers each port."""
    manifest = write_manifest(tmp_path, name="orphans", stages=TWO_NODES)
    assert nmcm(state_dir, "apply", manifest).code == 0
    doc = recorded(state_dir, "orphans")
    orphans = {n: v["pid"] for n, v in doc["nodes"].items()}
    doc["nodes"] = {}
    (state_dir / "orphans" / "state.json").write_text(json.dumps(doc))
    again = nmcm(state_dir, "apply", manifest)
    assert again.code == 0, again.output
    assert again.output.count("left unrecorded by an interrupted apply") == 2
    nodes = recorded(state_dir, "orphans")["nodes"]
    for name, old in orphans.items():
        assert nodes[name]["pid"] != old and not sim.is_node_process(old)  # zombies count as gone
        assert ports.holder(nodes[name]["port"]) == nodes[name]["pid"]
    assert nmcm(state_dir, "down", manifest).code == 0


def test_apply_killed_while_starting_nodes_is_continued(tmp_path: Path, state_dir: Path) -> None:
    manifest = write_manifest(tmp_path, name="killed", stages=TWO_NODES)
    port = yaml.safe_load(manifest.read_text())["spec"]["network"]["port"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nmcm_deploy", "apply", str(manifest)],
        cwd=ROOT,
        env={**os.environ, "NMCM_STATE_DIR": str(state_dir), "NO_COLOR": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Around the moment h7a3's process exists (recorded or not yet: both must end well).
    wait_for(lambda: ports.listening(port + 1) or proc.poll() is not None, 120)
    proc.kill()
    proc.wait()
    again = nmcm(state_dir, "apply", manifest)
    assert again.code == 0, again.output
    nodes = recorded(state_dir, "killed")["nodes"]
    for stage, name in enumerate(("f413", "h7a3")):
        assert ports.holder(port + stage) == nodes[name]["pid"]  # the recorded one, alone
    assert nmcm(state_dir, "down", manifest).code == 0


def test_a_frozen_node_is_unresponsive_and_blamed_for_what_its_neighbour_reports(
    tmp_path: Path, state_dir: Path
) -> None:
    from nmcm_deploy.coordinator.link import NodeFailed
    from nmcm_deploy.reconcile.cluster import prepare
    from nmcm_deploy.reconcile.state import StateStore
    from nmcm_deploy.reconcile.train import _blame

    manifest = write_manifest(tmp_path, name="frozen", stages=TWO_NODES)
    assert nmcm(state_dir, "apply", manifest).code == 0
    h7a3 = recorded(state_dir, "frozen")["nodes"]["h7a3"]["pid"]
    with stopped(h7a3):
        status = nmcm(state_dir, "status", manifest, "-o", "json")
        assert status.code == 1
        health = {n["name"]: n["health"] for n in json.loads(status.stdout)["clusters"][0]["nodes"]}
        assert health == {"f413": "Healthy", "h7a3": "Unresponsive"}
        os.environ["NMCM_STATE_DIR"] = str(state_dir)
        try:
            prepared = prepare(manifest, None)
            state = StateStore("frozen").load()
            told = _blame(prepared, state, NodeFailed("f413", "reported TIMEOUT: no frame"))
        finally:
            del os.environ["NMCM_STATE_DIR"]
        assert told.node == "h7a3" and "stopped answering" in told.message
        assert "'f413' then reported: reported TIMEOUT" in told.message
    assert nmcm(state_dir, "status", manifest).code == 0
    assert nmcm(state_dir, "down", manifest).code == 0


def test_idle_connections_do_not_lock_the_coordinator_out(tmp_path: Path, state_dir: Path) -> None:
    manifest = write_manifest(tmp_path, name="idle", stages=[("f413", 0, 5)])
    assert nmcm(state_dir, "apply", manifest).code == 0
    port = recorded(state_dir, "idle")["nodes"]["f413"]["port"]
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(8)]
    try:
        status = nmcm(state_dir, "status", manifest, "-o", "json")
        assert status.code == 0, status.output
        manifest.write_text(manifest.read_text().replace("lr: 0.05", "lr: 0.02"))
        train = nmcm(state_dir, "apply", manifest)
        assert train.code == 0, train.output
    finally:
        for s in idle:
            s.close()
    assert nmcm(state_dir, "down", manifest).code == 0


def test_a_build_left_running_by_a_killed_apply_keeps_its_folder_locked(tmp_path: Path) -> None:
    """The build lock passes to the build's processes: killing the process that took it does
    not free the folder while the build it started still runs."""
    import fcntl

    folder, go, done = tmp_path / "tree", tmp_path / "go", tmp_path / "done"
    build = f"(while [ ! -e {go} ]; do sleep 0.05; done; touch {done}) &"
    code = (
        "import time\n"
        "from pathlib import Path\n"
        "from nmcm_deploy.build.steps import build_lock, run_step\n"
        f"with build_lock(Path({str(folder)!r})) as lock:\n"
        f"    run_step(['sh', '-c', {build!r}], 'a build', Path({str(tmp_path / 'log')!r}), lock)\n"
        "    print('started', flush=True)\n"
        "    time.sleep(600)\n"
    )
    apply = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE)
    assert apply.stdout is not None and apply.stdout.readline() == b"started\n"
    apply.kill()
    apply.wait()
    with open(folder.with_name("tree.lock"), "a") as fh:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the orphaned build holds it
        go.touch()
        fcntl.flock(fh, fcntl.LOCK_EX)  # the next apply waits ...
        assert done.exists()  # ... until that build has finished
