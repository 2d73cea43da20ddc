"""`nmcm estimate`: the JSON contract (DESIGN.md), figures that add up, the pipelined schedule never
slower than the sequential one under the model, and what the links cost."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from nmcm_deploy import profiles
from nmcm_deploy.compiler.cluster import build_model, plan_cluster
from nmcm_deploy.costs import model
from nmcm_deploy.costs.links import W5500Link, spi_sck_hz, wire_s
from nmcm_deploy.manifest import load_manifest
from tests.cluster_helpers import write_manifest
from tests.conftest import ROOT, run_nmcm

NODE_KEYS = {
    "name",
    "mcu",
    "stage",
    "layers",
    "compute_s",
    "comm_s",
    "idle_s",
    "sram_bytes",
    "flash_bytes",
    "layer_costs",
}
LAYER_KEYS = {
    "index",
    "type",
    "forward_instructions",
    "backward_instructions",
    "forward_cycles",
    "backward_cycles",
}


def test_estimate_json_follows_the_contract() -> None:
    result = run_nmcm("estimate", ROOT / "manifests" / "quickstart.yaml", "-o", "json")
    assert result.code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["format_version"] == 1 and doc["source"] == "model"
    assert doc["schedule"] == "pipelined" and doc["micro_batches"] >= 1
    assert 0 < doc["step_s"] < doc["epoch_s"]
    layers_seen = []
    for node in doc["nodes"]:
        assert set(node) >= NODE_KEYS
        first, last = node["layers"]
        assert [c["index"] for c in node["layer_costs"]] == list(range(first, last + 1))
        layers_seen += [c["index"] for c in node["layer_costs"]]
        for c in node["layer_costs"]:
            assert set(c) == LAYER_KEYS
            assert c["forward_instructions"] > 0 and c["backward_instructions"] >= 0
        # Every node is busy or idle for the whole epoch.
        total = node["compute_s"] + node["comm_s"] + node["idle_s"]
        assert total == pytest.approx(doc["epoch_s"], rel=1e-9)
    assert layers_seen == list(range(6))  # the quick start's six layers, each once
    # The planner's best for the same nodes, never slower than the manifest's own split.
    planner = doc["planner"]
    assert planner["stages_auto"] is False
    assert planner["best"]["epoch_s"] <= doc["epoch_s"] * (1 + 1e-12)
    assert all(a["epoch_s"] >= planner["best"]["epoch_s"] for a in planner["alternatives"])


def test_estimate_text_labels_its_figures() -> None:
    result = run_nmcm("estimate", ROOT / "manifests" / "quickstart.yaml")
    assert result.code == 0, result.output
    assert "[model]" in result.stdout
    assert "cycles per instruction" in result.stdout
    assert "the planner's best for these nodes" in result.stdout


def test_a_stage_that_does_not_fit_is_an_error(tmp_path: Path) -> None:
    manifest = write_manifest(
        tmp_path,
        name="too-big",
        stages=[("f413", 0, 1), ("h7a3", 2, 3)],
        layers=[
            {"type": "flatten"},
            {"type": "linear", "out_features": 4096},
            {"type": "linear", "out_features": 10},
            {"type": "softmax"},
        ],
    )
    result = run_nmcm("estimate", manifest)
    assert result.code == 1
    assert "stage 0" in result.output and "SRAM" in result.output


@pytest.mark.parametrize("seed", range(6))
def test_pipelining_never_loses_to_the_sequential_schedule(tmp_path: Path, seed: int) -> None:
    """Under the model, more micro-batches in flight can only help (the schedule simulation's
    pipelined batch is never longer than the sequential one), for sampled splits."""
    rng = random.Random(seed)
    cut = rng.randint(0, 4)
    m = rng.choice([1, 2, 4, 8])
    epochs = {}
    for schedule in ("sequential", "pipelined"):
        (tmp_path / schedule).mkdir()
        path = write_manifest(
            tmp_path / schedule,
            name=f"sched-{seed}",
            stages=[("f413", 0, cut), ("h7a3", cut + 1, 5)],
            micro_batches=m,
            schedule=schedule,
        )
        manifest = load_manifest(path)
        _, ir = build_model(manifest)
        est = model.estimate(plan_cluster(manifest, ir), manifest.training, 1438, 359)
        epochs[schedule] = est.epoch_s
    assert epochs["pipelined"] <= epochs["sequential"] * (1 + 1e-12)


def test_spi_clock_is_the_firmware_divider() -> None:
    # A power of two from 2 to 256, the smallest that brings SCK to the limit or below.
    assert spi_sck_hz(100e6) == 25e6  # F413: APB2 100 MHz / 4
    assert spi_sck_hz(140e6) == 17.5e6  # H7A3: pll1_q 140 MHz / 8
    assert spi_sck_hz(10e6) == 5e6  # never below /2
    assert spi_sck_hz(1e9, 1e6) == 1e9 / 256  # never above /256


def test_every_board_has_a_w5500_link_with_sources() -> None:
    for name in profiles.board_names():
        board = profiles.board(name)
        link = W5500Link.of_board(board)
        assert link.send_s(1000) > link.send_s(100) > 0
        for figure in (board.link.spi_kernel_hz, board.link.spi_efficiency):
            assert figure.source
    for name in profiles.mcu_names():
        cpi = profiles.mcu(name).cycles_per_instruction
        assert cpi.value > 0 and cpi.source and 0 <= cpi.uncertainty < 1


def test_a_long_frame_goes_in_tcp_segments() -> None:
    one = wire_s(1460)
    assert wire_s(1461) > one  # a second segment, with its headers
    assert wire_s(2920) == pytest.approx(2 * one)
