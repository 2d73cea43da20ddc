"""`nmcm study`: every sequence of MCU types with every split in that order, the best of each, the
files it writes, and a model that only fits when split."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

from nmcm_deploy.costs import study_doc
from tests.cluster_helpers import MLP_LAYERS, digits_npz, write_manifest
from tests.conftest import ROOT, Result, run_nmcm
from tests.test_planner import WIDE_CNN

PNG = b"\x89PNG\r\n\x1a\n"


def test_study_covers_every_sequence_and_split(tmp_path: Path) -> None:
    out = tmp_path / "study"
    result = run_nmcm(
        "study",
        ROOT / "manifests" / "quickstart.yaml",
        "--max-nodes",
        "2",
        "--out",
        out,
        "-o",
        "json",
        env={"NMCM_STATE_DIR": str(tmp_path / "state")},
    )
    assert result.code == 0, result.output
    doc = json.loads(result.stdout)
    mcus = ["stm32f413zh", "stm32h7a3zi"]
    sequences = [c["mcus"] for c in doc["configurations"]]
    assert sequences == [[a] for a in mcus] + [[a, b] for a in mcus for b in mcus]
    for c in doc["configurations"]:
        assert len(c["splits"]) == comb(6 - 1, len(c["mcus"]) - 1)  # six layers, every cut
        epochs = [s["epoch_s"] for s in c["splits"] if s["fits"]]
        assert all(s["epoch_s"] is None for s in c["splits"] if not s["fits"])
        assert c["best"]["epoch_s"] == min(epochs)
        for s in c["splits"]:
            assert [st["mcu"] for st in s["stages"]] == c["mcus"]  # in the sequence's order
    assert json.loads((out / "study.json").read_text())["configurations"] == doc["configurations"]
    for plot in ("epoch.png", "memory.png"):
        assert (out / plot).read_bytes().startswith(PNG)
    report = (out / "report.md").read_text()
    assert report.count("\n| ") == 1 + len(sequences)  # the header and one row each
    # docs/study.md's section of it: one row per configuration, fastest first.
    rows = [line for line in study_doc.section("study", tmp_path) if line.startswith("| ")][1:]
    times = [float(row.split(" | ")[2]) for row in rows]
    assert len(rows) == len(sequences) and times == sorted(times)


def test_a_model_too_big_for_one_f413_fits_split(tmp_path: Path) -> None:
    def study_f413s(manifest: Path) -> Result:
        return run_nmcm(
            "study",
            manifest,
            *("--mcus", "stm32f413zh", "--max-nodes", "2", "--out", tmp_path / "s", "-o", "json"),
            env={"NMCM_STATE_DIR": str(tmp_path / "state")},
        )

    single_node = write_manifest(
        tmp_path, name="wide", stages=[("f413", 0, 7)], layers=WIDE_CNN, micro_batches=4
    )
    split = write_manifest(
        tmp_path,
        name="wide2",
        stages=[("f413", 0, 4), ("f413b", 5, 7)],
        layers=WIDE_CNN,
        micro_batches=4,
    )
    # validate refuses the single-F413 manifest (its stage does not fit); the study, which places
    # the model on other sequences of MCUs, takes it and finds what the split manifest's finds.
    state = {"NMCM_STATE_DIR": str(tmp_path / "state")}
    assert run_nmcm("validate", single_node, env=state).code == 1
    found = []
    for manifest in (single_node, split):
        result = study_f413s(manifest)
        assert result.code == 0, result.output
        single, pair = json.loads(result.stdout)["configurations"]
        assert single["best"] is None and not single["splits"][0]["fits"]
        assert pair["best"] is not None and pair["best"]["epoch_s"] > 0
        found.append((single, pair))
    assert found[0] == found[1]


def test_an_unknown_mcu_is_a_clear_error(tmp_path: Path) -> None:
    result = run_nmcm(
        "study",
        ROOT / "manifests" / "quickstart.yaml",
        "--mcus",
        "stm32f999",
        "--out",
        tmp_path / "s",
        env={"NMCM_STATE_DIR": str(tmp_path / "state")},
    )
    assert result.code == 1
    assert "unknown MCU 'stm32f999'" in result.output
    assert "Traceback" not in result.output


def test_train_sim_trains_each_configuration_to_the_same_model(tmp_path: Path) -> None:
    """`--train sim`: the best split of one, two and three F413s, each trained on a sim cluster
    of its own, gives the same weights bit for bit (every split is the same arithmetic)."""
    npz = digits_npz(tmp_path / "digits.npz", flat=True, train=48, test=16)
    manifest = write_manifest(
        tmp_path,
        name="study-train",
        stages=[("f413", 0, 3), ("h7a3", 4, 5)],
        layers=MLP_LAYERS,
        input_shape=[64],
        npz=npz,
        micro_batches=2,
    )
    out = tmp_path / "study"
    result = run_nmcm(
        "study",
        manifest,
        *("--mcus", "stm32f413zh", "--max-nodes", "3", "--train", "sim", "--out", out),
        *("-o", "json"),
        env={"NMCM_STATE_DIR": str(tmp_path / "state")},
    )
    assert result.code == 0, result.output
    doc = json.loads(result.stdout)
    trained = doc["trained"]
    assert [t["mcus"] for t in trained] == [["stm32f413zh"] * k for k in (1, 2, 3)]
    best = [c["best"] for c in doc["configurations"]]
    assert [t["split"] for t in trained] == [
        " | ".join(f"{s['layers'][0]}-{s['layers'][1]}" for s in b["stages"]) for b in best
    ]
    assert len({t["split"] for t in trained}) == 3  # three different splits
    assert doc["same_weights"] and doc["same_accuracy"]
    assert len({t["test_accuracy"] for t in trained}) == 1
    assert "bit for bit" in (out / "report.md").read_text()
    # Each configuration's cluster was taken down after its run: no node left recorded.
    states = sorted((out / "state").glob("*/state.json"))
    assert len(states) == 3
    assert all(json.loads(p.read_text())["nodes"] == {} for p in states)
    assert "Traceback" not in result.stderr


def test_train_takes_only_sim(tmp_path: Path) -> None:
    result = run_nmcm(
        "study",
        ROOT / "manifests" / "quickstart.yaml",
        *("--train", "qemu", "--out", tmp_path / "s"),
        env={"NMCM_STATE_DIR": str(tmp_path / "state")},
    )
    assert result.code == 1
    assert "only sim" in result.output and "Traceback" not in result.output
