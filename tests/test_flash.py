"""Flashing boards with pyOCD, tested up to pyOCD's API and no further.

No probe or board exists here, so pyOCD's ``ConnectHelper``, ``FileProgrammer`` and
``exceptions`` are replaced by ``tests/fake_pyocd.py`` at the one seam nmcm has for it
(``pyocd_session._api``, or ``$NMCM_PYOCD_FAKE`` for a subprocess). Everything on nmcm's side is
the real code. Where a node must answer on the network after its reset, the fake board starts the
real sim node of that stage: the flasher's wait, handshake and firmware check run against the
node runtime, over TCP.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml

from nmcm_deploy.compiler.cluster import write_export
from nmcm_deploy.flash import pyocd_session
from nmcm_deploy.flash.errors import (
    FlashAlgoFailed,
    PackMissing,
    ProbeAmbiguous,
    ProbeNotFound,
    TargetConnectFailed,
    VerifyMismatch,
)
from nmcm_deploy.flash.flasher import FlashIncomplete, HardwareNode, flash_nodes, preflight
from nmcm_deploy.flash.packs import PACKS_ENV, PackEntry, config_entries, env_entries, resolve_pack
from nmcm_deploy.flash.pyocd_session import FLASH_BASE, FlashRequest, choose_probe, flash
from nmcm_deploy.manifest.model import NodeSpec, ProbeSpec
from nmcm_deploy.profiles import mcu
from nmcm_deploy.reconcile.cluster import Prepared, prepare
from nmcm_deploy.reconcile.state import NodeState, StateStore
from nmcm_deploy.targets import sim
from tests.cluster_helpers import free_port_block, write_manifest
from tests.conftest import ROOT, run_nmcm
from tests.fake_pyocd import FakeBoard, FakePyocd

F413_UID = "0670FF383133524157185532"
H7A3_UID = "003A00283132511838363431"
F4_PACK = "Keil.STM32F4xx_DFP.2.17.1.pack"
H7_PACK = "Keil.STM32H7xx_DFP.3.1.1.pack"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePyocd:
    world = FakePyocd()
    monkeypatch.setattr(pyocd_session, "_api", world)
    return world


def packs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for mcu_name, name in (("stm32f413zh", F4_PACK), ("stm32h7a3zi", H7_PACK)):
        path = folder / name
        path.write_bytes(b"PK\x03\x04 pack")
        out[mcu_name] = path
    return out


def image(path: Path, size: int = 40_000) -> Path:
    path.write_bytes(bytes((i * 7 + 3) % 256 for i in range(size)))
    return path


def request(tmp_path: Path, uid: str | None = F413_UID, **kw: object) -> FlashRequest:
    pack = packs(tmp_path / "packs")["stm32f413zh"]
    fields: dict[str, object] = {
        "node": "f413",
        "uid": uid,
        "target": "stm32f413zhtx",
        "pack": pack,
        "image": image(tmp_path / "node.bin"),
        **kw,
    }
    return FlashRequest(**fields)  # type: ignore[arg-type]


def assert_never_blocking(world: FakePyocd) -> None:
    probe_calls = [kw for name, kw in world.calls if name.startswith(("get_all", "session_with"))]
    assert probe_calls, "no probe was asked for"
    assert all(kw["blocking"] is False for kw in probe_calls)


# --- nmcm probes, as a user runs it ------------------------------------------------------------


def probes_cli(tmp_path: Path, boards: list[dict[str, object]], *args: str) -> tuple[int, str, str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    world = tmp_path / "world.json"
    world.write_text(json.dumps({"boards": boards}))
    log = tmp_path / "calls.jsonl"
    result = run_nmcm(
        "probes",
        *args,
        env={
            "NMCM_PYOCD_FAKE": "tests.fake_pyocd",
            "NMCM_FAKE_PYOCD_WORLD": str(world),
            "NMCM_FAKE_PYOCD_LOG": str(log),
            "PYTHONPATH": str(ROOT),
        },
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert calls and all(c["blocking"] is False for c in calls), calls
    return result.code, result.stdout, result.stderr


@pytest.mark.parametrize("count", [0, 1, 3])
def test_probes_lists_connected_probes_as_json(tmp_path: Path, count: int) -> None:
    boards = [
        {"unique_id": F413_UID, "board_target": "stm32f413zh"},
        {"unique_id": H7A3_UID, "board_target": None, "product_name": "STLINK-V3"},
        {"unique_id": "066BFF555052836687081234"},
    ][:count]
    code, out, err = probes_cli(tmp_path, boards, "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["format_version"] == 1
    assert doc["pyocd"] is True
    assert [p["unique_id"] for p in doc["probes"]] == sorted(str(b["unique_id"]) for b in boards)
    if count:
        by_uid = {p["unique_id"]: p for p in doc["probes"]}
        assert by_uid[F413_UID]["target"] == "stm32f413zh"
        assert by_uid[F413_UID]["vendor"] == "STMicroelectronics"
        assert set(by_uid[F413_UID]) == {"unique_id", "vendor", "product", "description", "target"}
    if count > 1:
        assert by_uid[H7A3_UID]["target"] is None
        assert by_uid[H7A3_UID]["product"] == "STLINK-V3"


def test_probes_table_and_no_probes_message(tmp_path: Path) -> None:
    code, out, err = probes_cli(tmp_path, [{"unique_id": F413_UID, "board_target": "stm32f413zh"}])
    assert code == 0
    assert F413_UID in out and "stm32f413zh" in out and "STMicroelectronics" in out
    code, out, err = probes_cli(tmp_path / "none", [])
    assert code == 0
    assert out == ""
    assert "no probes connected" in err


PROBES_IN_PROCESS = """
import json, sys
{setup}
sys.argv = ["nmcm", "probes", *sys.argv[1:]]
from nmcm_deploy.cli import main
try:
    main()
finally:
    print(json.dumps({{"torch": "torch" in sys.modules}}), file=sys.stderr)
"""


def run_probes_in_process(setup: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("NMCM_PYOCD_FAKE", None)
    return subprocess.run(
        [sys.executable, "-c", PROBES_IN_PROCESS.format(setup=setup), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_probes_without_pyocd_says_how_to_install(tmp_path: Path) -> None:
    # A None entry in sys.modules makes `import pyocd` fail as if it were not installed.
    block = "sys.modules['pyocd'] = None"
    proc = run_probes_in_process(block, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["pyocd"] is False
    assert doc["probes"] == []
    assert "pip install 'nmcm-deploy[hardware]'" in proc.stderr
    proc = run_probes_in_process(block)
    assert proc.returncode == 0
    assert "pip install 'nmcm-deploy[hardware]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_probes_does_not_import_torch() -> None:
    fake = "import os; os.environ['NMCM_PYOCD_FAKE'] = 'tests.fake_pyocd'"
    proc = run_probes_in_process(fake, "-o", "json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == {"torch": False}


# --- choosing the probe ------------------------------------------------------------------------


def test_full_uid_is_chosen_even_when_another_contains_it(fake: FakePyocd) -> None:
    fake.boards = [FakeBoard(F413_UID), FakeBoard("X" + F413_UID + "Y")]
    assert choose_probe("f413", F413_UID) == F413_UID
    assert_never_blocking(fake)


def test_uid_not_found_lists_the_connected_probes(fake: FakePyocd) -> None:
    fake.boards = [FakeBoard(H7A3_UID)]
    with pytest.raises(ProbeNotFound) as err:
        choose_probe("f413", F413_UID)
    assert err.value.message == f"node 'f413': probe {F413_UID} not found"
    assert H7A3_UID in (err.value.hint or "")
    assert_never_blocking(fake)


def test_partial_uid_matching_several_probes_is_ambiguous(fake: FakePyocd) -> None:
    fake.boards = [FakeBoard("0670FF0001"), FakeBoard("0670FF0002")]
    with pytest.raises(ProbeAmbiguous) as err:
        choose_probe("f413", "0670FF")
    assert "ambiguous" in err.value.message
    assert "0670FF0001" in err.value.message and "0670FF0002" in err.value.message
    assert_never_blocking(fake)


def test_partial_uid_of_one_probe_is_refused_with_the_full_uid(fake: FakePyocd) -> None:
    fake.boards = [FakeBoard(F413_UID)]
    with pytest.raises(ProbeAmbiguous) as err:
        choose_probe("f413", F413_UID[:10])
    assert "only part of" in err.value.message
    assert f'uid: "{F413_UID}"' in (err.value.hint or "")


def test_without_uid_the_only_probe_is_taken_and_several_are_refused(fake: FakePyocd) -> None:
    fake.boards = [FakeBoard(F413_UID)]
    assert choose_probe("f413", None) == F413_UID
    fake.boards.append(FakeBoard(H7A3_UID))
    with pytest.raises(ProbeAmbiguous, match="2 probes are connected"):
        choose_probe("f413", None)
    fake.boards = []
    with pytest.raises(ProbeNotFound, match="no debug probe connected"):
        choose_probe("f413", None)
    assert_never_blocking(fake)


def test_session_none_is_reported_as_not_found(fake: FakePyocd, tmp_path: Path) -> None:
    # The probe vanishes between listing and opening: pyOCD's session_with_chosen_probe -> None.
    board = FakeBoard(F413_UID)
    fake.boards = [board]
    original = fake.ConnectHelper.session_with_chosen_probe

    def vanish(**kwargs: object) -> object:
        fake.boards.clear()
        return original(**kwargs)  # type: ignore[arg-type]

    fake.ConnectHelper.session_with_chosen_probe = vanish  # type: ignore[method-assign]
    with pytest.raises(ProbeNotFound, match="not found or ambiguous"):
        flash(request(tmp_path))


# --- flashing one board ------------------------------------------------------------------------


def test_flash_programs_verifies_and_resets_with_safe_options(
    fake: FakePyocd, tmp_path: Path
) -> None:
    board = FakeBoard(F413_UID)
    fake.boards = [board]
    req = request(tmp_path)
    result = flash(req)
    data = req.image.read_bytes()
    assert result.bytes_written == len(data) and result.uid == F413_UID
    assert bytes(board.flash[: len(data)]) == data
    assert board.resets == 1

    ((_, session_call),) = [c for c in fake.calls if c[0] == "session_with_chosen_probe"]
    assert session_call["unique_id"] == F413_UID
    assert session_call["blocking"] is False
    options = session_call["options"]
    assert options["pack"] == [str(req.pack)]
    assert options["target_override"] == "stm32f413zhtx"
    assert options["connect_mode"] == "under-reset"
    assert options["frequency"] == 4_000_000
    ((_, program),) = [c for c in fake.calls if c[0] == "program"]
    assert program == {"path": str(req.image), "file_format": "bin", "base_address": FLASH_BASE}
    # Verified by reading every byte back, in chunks, after programming; reset last; closed.
    names = [name for name, _ in fake.calls]
    reads = [kw for name, kw in fake.calls if name == "read_memory_block8"]
    assert names.index("program") < names.index("read_memory_block8")
    assert names[-2:] == ["reset", "close"]
    assert reads[0]["addr"] == FLASH_BASE
    assert sum(r["size"] for r in reads) == len(data) and len(reads) > 1
    assert_never_blocking(fake)


def test_verify_mismatch_names_the_address_and_does_not_reset(
    fake: FakePyocd, tmp_path: Path
) -> None:
    bad = FLASH_BASE + 0x9A31
    board = FakeBoard(F413_UID, corrupt_at=bad)
    fake.boards = [board]
    with pytest.raises(VerifyMismatch) as err:
        flash(request(tmp_path))
    assert err.value.address == bad
    assert f"flash verify mismatch at address 0x{bad:08x}" in err.value.message
    assert err.value.node == "f413" and err.value.flash_touched
    assert board.resets == 0
    assert fake.calls[-1][0] == "close"


def test_flash_algorithm_failure_is_reported_with_its_address(
    fake: FakePyocd, tmp_path: Path
) -> None:
    fake.boards = [FakeBoard(F413_UID, program_fails_at=FLASH_BASE + 0x4000)]
    with pytest.raises(FlashAlgoFailed) as err:
        flash(request(tmp_path))
    assert "flash algorithm failed" in err.value.message
    assert "0x08004000" in err.value.message
    assert "sector" in (err.value.hint or "")
    assert err.value.flash_touched


def test_a_pack_without_the_target_fails_to_connect_before_programming(
    fake: FakePyocd, tmp_path: Path
) -> None:
    fake.boards = [FakeBoard(F413_UID)]
    h7_pack = packs(tmp_path / "p")["stm32h7a3zi"]
    with pytest.raises(TargetConnectFailed) as err:
        flash(request(tmp_path, pack=h7_pack))
    assert "pyOCD does not know target stm32f413zhtx" in err.value.message
    assert not err.value.flash_touched
    assert "program" not in [name for name, _ in fake.calls]


def test_a_board_that_does_not_answer_on_swd_is_a_connect_failure(
    fake: FakePyocd, tmp_path: Path
) -> None:
    board = FakeBoard(F413_UID, connect_fails="No ACK received")
    fake.boards = [board]
    with pytest.raises(TargetConnectFailed) as err:
        flash(request(tmp_path))
    assert err.value.message == (
        f"node 'f413': cannot connect to stm32f413zhtx through probe {F413_UID}: "
        "ProbeError: No ACK received"
    )
    assert [name for name, _ in fake.calls][-2:] == ["open", "close"]
    assert board.resets == 0 and board.flash == bytearray([0xFF]) * board.flash_size


def test_frequency_and_connect_mode_come_from_the_manifest(tmp_path: Path) -> None:
    pack = packs(tmp_path)["stm32f413zh"]
    spec = node_spec("f413", "stm32f413zh", ProbeSpec(F413_UID, pack, 1_800_000, "halt"))
    settings = preflight([(spec, "spec.nodes[0]")])["f413"]
    assert (settings.frequency, settings.connect_mode) == (1_800_000, "halt")
    default = node_spec("f413", "stm32f413zh", ProbeSpec(F413_UID, pack, None, None))
    settings = preflight([(default, "spec.nodes[0]")])["f413"]
    assert (settings.frequency, settings.connect_mode) == (4_000_000, "under-reset")
    assert settings.request(tmp_path / "x.bin").session_options()["frequency"] == 4_000_000


# --- packs: files on this machine, never downloads ---------------------------------------------


def node_spec(name: str, mcu_name: str, probe: ProbeSpec | None) -> NodeSpec:
    from ipaddress import IPv4Address

    from nmcm_deploy.manifest.model import W5500Spec

    w5500 = W5500Spec(IPv4Address("192.168.50.11"), "02:4e:4d:00:00:01", None, None, None)
    return NodeSpec(name, mcu_name, None, probe, w5500)


def test_pack_from_the_manifest_wins_and_must_exist(tmp_path: Path) -> None:
    pack = packs(tmp_path)["stm32f413zh"]
    profile = mcu("stm32f413zh")
    other = [PackEntry("stm32f413zh", tmp_path / "other.pack", "env")]
    spec = node_spec("f413", "stm32f413zh", ProbeSpec(F413_UID, pack, None, None))
    resolved = resolve_pack(spec, profile, "spec.nodes[0]", other)
    assert resolved.path == pack and resolved.origin == "spec.nodes[0].probe.pack"
    gone = node_spec("f413", "stm32f413zh", ProbeSpec(F413_UID, tmp_path / "no.pack", None, None))
    with pytest.raises(PackMissing, match=r"spec.nodes\[0\].probe.pack\) does not exist"):
        resolve_pack(gone, profile, "spec.nodes[0]", [])


def test_packs_from_the_environment_by_mcu_or_by_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = packs(tmp_path / "a")
    newer = tmp_path / "a" / "Keil.STM32F4xx_DFP.2.18.0.pack"
    newer.write_bytes(b"PK")
    spec = node_spec("n", "stm32f413zh", None)
    # A directory: the newest pack of the MCU's family in it.
    monkeypatch.setenv(PACKS_ENV, str(tmp_path / "a"))
    assert resolve_pack(spec, mcu("stm32f413zh"), "w", env_entries()).path == newer
    h7 = node_spec("n", "stm32h7a3zi", None)
    assert resolve_pack(h7, mcu("stm32h7a3zi"), "w", env_entries()).path == found["stm32h7a3zi"]
    # MCU=FILE pins one; it is taken before any bare entry.
    monkeypatch.setenv(PACKS_ENV, f"{tmp_path / 'a'}{os.pathsep}stm32f413zh={found['stm32f413zh']}")
    assert resolve_pack(spec, mcu("stm32f413zh"), "w", env_entries()).path == found["stm32f413zh"]
    monkeypatch.setenv(PACKS_ENV, f"stm32f413zh={tmp_path / 'missing.pack'}")
    with pytest.raises(PackMissing, match=f"from {PACKS_ENV}"):
        resolve_pack(spec, mcu("stm32f413zh"), "w", env_entries())


def test_packs_from_the_config_file(tmp_path: Path) -> None:
    found = packs(tmp_path / "packs")
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "packs": {
                    "Keil.STM32H7xx_DFP": f"packs/{H7_PACK}",
                    "stm32f413zh": str(found["stm32f413zh"]),
                }
            }
        )
    )
    entries = config_entries(config)
    h7 = node_spec("n", "stm32h7a3zi", None)
    resolved = resolve_pack(h7, mcu("stm32h7a3zi"), "w", entries)
    assert resolved.path == found["stm32h7a3zi"]  # relative to the config file, keyed by family
    assert resolved.origin == str(config)
    config.write_text("packs: 3\n")
    with pytest.raises(Exception, match="must map MCU names to pack files"):
        config_entries(config)


def test_no_pack_anywhere_says_where_to_put_one(tmp_path: Path) -> None:
    with pytest.raises(PackMissing) as err:
        resolve_pack(
            node_spec("h7a3", "stm32h7a3zi", None), mcu("stm32h7a3zi"), "spec.nodes[1]", []
        )
    assert "no CMSIS pack for stm32h7a3zi" in err.value.message
    assert "stm32h7a3zitxq needs Keil.STM32H7xx_DFP" in err.value.message
    assert "never downloads" in err.value.message
    hint = err.value.hint or ""
    assert "spec.nodes[1].probe.pack" in hint and PACKS_ENV in hint and "config.yaml" in hint


# --- a cluster: per node, continuing past failures, recording each success --------------------


@dataclass
class SimCluster:
    prepared: Prepared
    nodes_dir: Path


@pytest.fixture(scope="module")
def sim_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimCluster]:
    """Two stages compiled and their sim node executables built once for the module: what the
    fake boards run after their reset."""
    root = tmp_path_factory.mktemp("boards")
    mp = pytest.MonkeyPatch()
    mp.setenv("NMCM_STATE_DIR", str(root / "state"))
    manifest = write_manifest(root, name="boards", stages=[("f413", 0, 3), ("h7a3", 4, 5)])
    doc = yaml.safe_load(manifest.read_text())
    found = packs(root / "packs")
    for node, uid in zip(doc["spec"]["nodes"], (F413_UID, H7A3_UID), strict=True):
        node["probe"] = {"uid": uid, "pack": str(found[node["mcu"]])}
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    prepared = prepare(manifest, "sim")
    write_export(prepared.cluster, prepared.nodes_dir)
    yield SimCluster(prepared, prepared.nodes_dir)
    mp.undo()


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def hardware_nodes(
    cluster: SimCluster, tmp_path: Path, started: list[subprocess.Popen[bytes]]
) -> tuple[list[HardwareNode], list[FakeBoard]]:
    """The cluster's nodes as boards behind fake probes: after a reset, a board runs its stage's
    sim node on loopback, at a port of its own."""
    from nmcm_deploy.build.host import build_sim_node

    p = cluster.prepared
    base = free_port_block(len(p.cluster.stages))
    nodes, boards = [], []
    for i, (stage, desired) in enumerate(zip(p.cluster.stages, p.desired.nodes, strict=True)):
        folder = cluster.nodes_dir / desired.name
        executable = build_sim_node(folder, desired.firmware_sha256)
        port = base + i

        def boot(
            _board: FakeBoard,
            exe: Path = executable,
            f: Path = folder,
            port: int = port,
            fw: str = desired.firmware_sha256[:32],
        ) -> None:
            log = tmp_path / f"{f.name}.log"
            started.append(sim.start_node(exe, f / "stage.blob", port, log, fw))

        spec = stage.plan.node
        assert spec.probe is not None
        boards.append(FakeBoard(spec.probe.uid, board_target=spec.mcu, on_reset=boot))
        nodes.append(
            HardwareNode(
                spec=spec,
                where=f"spec.nodes[{i}]",
                desired=replace(desired, target="hardware", port=port),
                image=image(tmp_path / f"{desired.name}.bin", 20_000 + 5_000 * i),
                elf=None,
                host=sim.LOOPBACK,
                identity=p.identity(stage.plan.index),
                firmware_hash=desired.firmware_sha256[:32],
            )
        )
    return nodes, boards


def test_every_node_flashed_verified_answering_and_recorded(
    sim_cluster: SimCluster,
    fake: FakePyocd,
    tmp_path: Path,
    started: list[subprocess.Popen[bytes]],
) -> None:
    nodes, boards = hardware_nodes(sim_cluster, tmp_path, started)
    fake.boards = boards
    store = StateStore("boards", root=tmp_path / "state")
    state = store.load()
    steps: list[str] = []
    outcomes = flash_nodes(nodes, store, state, steps.append, boot_timeout=10)
    assert [o.ok for o in outcomes] == [True, True]
    assert all(b.resets == 1 for b in boards)
    recorded = json.loads(store.path.read_text())["nodes"]
    for node in nodes:
        r = recorded[node.name]
        assert r["host"] == sim.LOOPBACK and r["port"] == node.desired.port
        assert r["firmware_sha256"] == node.desired.firmware_sha256
        assert r["target"] == "hardware" and r["pid"] == 0
    assert any("answering at 127.0.0.1" in s for s in steps)
    assert_never_blocking(fake)
    # `nmcm status` finds the boards at their recorded addresses, running what was flashed.
    status = run_nmcm("status", "-o", "json", env={"NMCM_STATE_DIR": str(tmp_path / "state")})
    assert status.code == 0, status.output
    (doc,) = json.loads(status.stdout)["clusters"]
    assert [(n["name"], n["reachable"], n["sync"]) for n in doc["nodes"]] == [
        ("f413", True, "Synced"),
        ("h7a3", True, "Synced"),
    ]


def test_one_node_failing_does_not_stop_the_other(
    sim_cluster: SimCluster,
    fake: FakePyocd,
    tmp_path: Path,
    started: list[subprocess.Popen[bytes]],
) -> None:
    nodes, boards = hardware_nodes(sim_cluster, tmp_path, started)
    boards[0].corrupt_at = FLASH_BASE + 0x1234  # the first node's flash reads back wrong
    fake.boards = boards
    store = StateStore("boards", root=tmp_path / "state")
    state = store.load()
    # What the state said before: the first board had some older firmware.
    state.nodes["f413"] = NodeState(
        stage=0, mcu="stm32f413zh", target="hardware", firmware_sha256="ab" * 32, host=sim.LOOPBACK
    )
    store.save(state)
    writes: list[dict[str, object]] = []
    save = store.save

    def save_and_snapshot(s: object) -> None:
        save(s)  # type: ignore[arg-type]
        writes.append(json.loads(store.path.read_text())["nodes"])

    store.save = save_and_snapshot  # type: ignore[method-assign]

    with pytest.raises(FlashIncomplete) as err:
        flash_nodes(nodes, store, state, lambda _m: None, boot_timeout=10)
    outcomes = {o.node: o for o in err.value.outcomes}
    assert not outcomes["f413"].ok and outcomes["h7a3"].ok
    assert "verify mismatch at address 0x08001234" in outcomes["f413"].detail
    assert outcomes["f413"].probe == F413_UID
    message = err.value.message
    assert message.startswith("flashing failed on 1 of 2 node(s):")
    assert "FAILED: flash verify mismatch" in message and "ok: " in message
    assert boards[0].resets == 0 and boards[1].resets == 1
    # The failed board's old firmware is forgotten at once; the other's success recorded.
    assert writes[0]["f413"]["firmware_sha256"] == ""  # type: ignore[index]
    final = json.loads(store.path.read_text())["nodes"]
    assert final["h7a3"]["firmware_sha256"] == nodes[1].desired.firmware_sha256
    assert final["f413"]["firmware_sha256"] == ""


def test_a_node_that_never_answers_fails_after_the_timeout(
    sim_cluster: SimCluster,
    fake: FakePyocd,
    tmp_path: Path,
    started: list[subprocess.Popen[bytes]],
) -> None:
    nodes, boards = hardware_nodes(sim_cluster, tmp_path, started)
    boards[0].on_reset = None  # flashed and reset, but the firmware never brings the network up
    fake.boards = boards[:1]
    store = StateStore("boards", root=tmp_path / "state")
    with pytest.raises(FlashIncomplete) as err:
        flash_nodes(nodes[:1], store, store.load(), lambda _m: None, boot_timeout=0.5)
    (outcome,) = err.value.outcomes
    assert "not answering at 127.0.0.1" in outcome.detail
    assert "115200" in (outcome.hint or "")
    assert "f413" not in store.load().nodes


def test_a_node_answering_with_other_firmware_is_a_failure(
    sim_cluster: SimCluster,
    fake: FakePyocd,
    tmp_path: Path,
    started: list[subprocess.Popen[bytes]],
) -> None:
    nodes, boards = hardware_nodes(sim_cluster, tmp_path, started)
    fake.boards = boards[:1]
    node = replace(nodes[0], firmware_hash="0" * 32)
    store = StateStore("boards", root=tmp_path / "state")
    with pytest.raises(FlashIncomplete) as err:
        flash_nodes([node], store, store.load(), lambda _m: None, boot_timeout=10)
    assert "not the image just flashed" in err.value.outcomes[0].detail
    assert "f413" not in store.load().nodes


def test_missing_pack_is_refused_before_any_probe_is_touched(
    sim_cluster: SimCluster,
    fake: FakePyocd,
    tmp_path: Path,
    started: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    nodes, boards = hardware_nodes(sim_cluster, tmp_path, started)
    fake.boards = boards
    spec = nodes[1].spec
    assert spec.probe is not None
    gone = replace(spec, probe=replace(spec.probe, pack=None))
    monkeypatch.setenv("NMCM_CONFIG", str(tmp_path / "no-config.yaml"))
    monkeypatch.delenv(PACKS_ENV, raising=False)
    store = StateStore("boards", root=tmp_path / "state")
    with pytest.raises(PackMissing) as err:
        flash_nodes([nodes[0], replace(nodes[1], spec=gone)], store, store.load(), print)
    assert err.value.node == "h7a3"
    assert fake.calls == []
    assert not store.path.exists()


def test_apply_hardware_refuses_a_missing_pack_through_the_cli(tmp_path: Path) -> None:
    manifest = write_manifest(tmp_path, name="nopack", stages=[("f413", 0, 3), ("h7a3", 4, 5)])
    doc = yaml.safe_load(manifest.read_text())
    for node, uid in zip(doc["spec"]["nodes"], (F413_UID, H7A3_UID), strict=True):
        node["probe"] = {"uid": uid}
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    log = tmp_path / "calls.jsonl"
    world = tmp_path / "world.json"
    world.write_text(json.dumps({"boards": [{"unique_id": F413_UID}, {"unique_id": H7A3_UID}]}))
    result = run_nmcm(
        "apply",
        manifest,
        "--target",
        "hardware",
        env={
            "NMCM_STATE_DIR": str(tmp_path / "state"),
            "NMCM_PYOCD_FAKE": "tests.fake_pyocd",
            "NMCM_FAKE_PYOCD_WORLD": str(world),
            "NMCM_FAKE_PYOCD_LOG": str(log),
            "NMCM_CONFIG": str(tmp_path / "no-config.yaml"),
            "NMCM_PYOCD_PACKS": "",
            "PYTHONPATH": str(ROOT),
        },
    )
    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    assert "2 nodes cannot be flashed" in result.stderr
    assert "node 'f413': no CMSIS pack for stm32f413zh" in result.stderr
    assert "node 'h7a3': no CMSIS pack for stm32h7a3zi" in result.stderr
    assert not log.exists()  # no probe was asked for


def test_apply_hardware_flashes_real_images_and_reports_every_node(tmp_path: Path) -> None:
    """The whole hardware path through the CLI: the ARM images are cross-built for real and
    programmed into the fake boards; one board's flash reads back wrong, the other's probe is not
    connected. Both fail before any network is needed: a per-node report, exit 1, nothing
    recorded as done."""
    manifest = write_manifest(tmp_path, name="hw", stages=[("f413", 0, 3), ("h7a3", 4, 5)])
    doc = yaml.safe_load(manifest.read_text())
    found = packs(tmp_path / "packs")
    for node, uid in zip(doc["spec"]["nodes"], (F413_UID, H7A3_UID), strict=True):
        node["probe"] = {"uid": uid, "pack": str(found[node["mcu"]].relative_to(tmp_path))}
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    bad = FLASH_BASE + 0x100
    world = tmp_path / "world.json"
    world.write_text(json.dumps({"boards": [{"unique_id": F413_UID, "corrupt_at": bad}]}))
    log = tmp_path / "calls.jsonl"
    state = tmp_path / "state"
    result = run_nmcm(
        "apply",
        manifest,
        "--target",
        "hardware",
        env={
            "NMCM_STATE_DIR": str(state),
            "NMCM_PYOCD_FAKE": "tests.fake_pyocd",
            "NMCM_FAKE_PYOCD_WORLD": str(world),
            "NMCM_FAKE_PYOCD_LOG": str(log),
            "PYTHONPATH": str(ROOT),
        },
    )
    assert result.code == 1, result.output
    assert "Traceback" not in result.output
    assert "flashing failed on 2 of 2 node(s):" in result.stderr
    rows = {line.split()[0]: line for line in result.stderr.splitlines() if "FAILED:" in line}
    assert f"{F413_UID}  FAILED: flash verify mismatch at address 0x{bad:08x}" in rows["f413"]
    assert f"FAILED: probe {H7A3_UID} not found" in rows["h7a3"]

    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(c["blocking"] is False for c in calls if "blocking" in c)
    (program,) = [c for c in calls if c["call"] == "program"]
    assert program["base_address"] == FLASH_BASE and program["file_format"] == "bin"
    image = Path(program["path"])
    assert image.name == "nmcm-node-board.bin" and state in image.parents
    # A Cortex-M image: the initial stack pointer in the F413's SRAM, the reset vector in flash.
    sp, reset = (
        int.from_bytes(image.read_bytes()[:4], "little"),
        int.from_bytes(image.read_bytes()[4:8], "little"),
    )
    assert 0x20000000 < sp <= 0x20050000 and FLASH_BASE <= reset < FLASH_BASE + 0x180000
    (session,) = [c for c in calls if c["call"] == "session_with_chosen_probe"]
    assert session["options"]["target_override"] == "stm32f413zhtx"
    assert session["options"]["pack"] == [str(found["stm32f413zh"])]
    assert StateStore("hw", root=state).load().nodes == {}
