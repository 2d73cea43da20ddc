"""The cluster repository's workflow does what docs and DESIGN.md promise: pull requests validate,
plan into the job summary and train in sim; main applies on the boards' runner, one job at a
time, behind a protected environment, then asks for the status. (`make lint` checks the files
against GitHub's workflow schema.)"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"


def load(name: str) -> dict[Any, Any]:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    assert isinstance(doc, dict)
    # YAML 1.1 reads the key `on` as True.
    doc["on"] = doc.pop(True, doc.get("on"))
    return doc


def commands(job: dict[str, Any]) -> list[str]:
    """The nmcm commands a job runs, in order (`nmcm validate`, `nmcm plan --target sim`, ...)."""
    out = []
    for step in job["steps"]:
        for line in str(step.get("run", "")).splitlines():
            for command in re.findall(r"\bnmcm [a-z]+", line):
                target = re.search(r"--target (\w+)", line)
                out.append(f"{command} --target {target[1]}" if target else command)
    return out


def step_runs(job: dict[str, Any]) -> str:
    return "\n".join(str(step.get("run", "")) for step in job["steps"])


@pytest.fixture(scope="module")
def cluster() -> dict[Any, Any]:
    return load("cluster.yml")


def test_pull_requests_validate_plan_into_the_summary_and_train_in_sim(
    cluster: dict[Any, Any],
) -> None:
    assert "pull_request" in cluster["on"]
    check = cluster["jobs"]["check"]
    assert "if" not in check  # runs on every pull request
    assert "self-hosted" not in check["runs-on"]  # PR code never runs beside the boards
    run = commands(check)
    assert run[0] == "nmcm validate"
    assert "nmcm plan --target sim" in run
    assert "nmcm apply --target sim" in run
    assert run.index("nmcm validate") < run.index("nmcm plan --target sim")
    assert "GITHUB_STEP_SUMMARY" in step_runs(check)
    assert "NMCM_MANIFESTS" in cluster["env"]


def test_main_applies_on_the_boards_runner_serialised_and_protected(
    cluster: dict[Any, Any],
) -> None:
    assert cluster["on"]["push"]["branches"] == ["main"]
    apply = cluster["jobs"]["apply"]
    condition = apply["if"]
    assert "github.ref == 'refs/heads/main'" in condition
    assert "github.event_name != 'pull_request'" in condition
    assert "self-hosted" in apply["runs-on"] and "nmcm-boards" in apply["runs-on"]
    assert apply["concurrency"]["group"] == "nmcm-boards"
    assert apply["concurrency"]["cancel-in-progress"] is False
    assert apply["environment"] == "boards"
    assert apply["needs"] == "check"
    run = commands(apply)
    assert "nmcm apply" in run and "nmcm status" in run
    assert run.index("nmcm apply") < run.index("nmcm status")
    assert "--target" not in " ".join(c for c in run if c.startswith("nmcm apply"))
    status_step = next(s for s in apply["steps"] if "nmcm status" in str(s.get("run", "")))
    assert status_step["if"] == "success() || failure()"  # also after a failed apply
    assert "pyocd==" in step_runs(apply)


def test_ci_workflow_is_kept() -> None:
    ci = load("ci.yml")
    assert ci["jobs"]["test"]["steps"][-1]["run"] == ".ci/run"
