"""The CLI driven as a user drives it: exit codes, JSON output, help, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MANIFESTS, QUICKSTART, ROOT, run_nmcm

EXAMPLES = sorted([QUICKSTART, *MANIFESTS.glob("examples/*.yaml")])


def test_version() -> None:
    from nmcm_deploy import __version__

    result = run_nmcm("--version")
    assert result.code == 0
    assert result.stdout.strip() == f"nmcm {__version__}"


def commands() -> list[str]:
    from nmcm_deploy.cli import app

    return sorted(c.name for c in app.registered_commands if c.name)


@pytest.mark.parametrize("command", commands())
def test_every_command_has_help_with_an_example(command: str) -> None:
    result = run_nmcm(command, "--help")
    assert result.code == 0
    assert any(f"{word} nmcm {command}" in result.stdout for word in ("Example:", "Examples:"))


def test_shell_completion_completes_commands_and_options() -> None:
    """`nmcm --install-completion` installs what `--show-completion` prints; the script asks nmcm
    itself for the words, as bash would."""
    shown = run_nmcm("--show-completion", "bash")
    assert shown.code == 0 and "_nmcm_completion" in shown.stdout

    def complete(words: str) -> list[str]:
        env = {"_NMCM_COMPLETE": "complete_bash", "COMP_WORDS": words}
        env["COMP_CWORD"] = str(len(words.split()) - 1)
        proc = subprocess.run(
            [sys.executable, "-m", "nmcm_deploy"],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.split()

    assert complete("nmcm ap") == ["apply"]
    assert set(complete("nmcm l")) == {"logs"}
    assert "--output" in complete("nmcm status --o")


def test_usage_errors_do_not_exit_2() -> None:
    result = run_nmcm("validate")  # missing FILE
    assert result.code == 64
    assert "Traceback" not in result.output
    assert run_nmcm("no-such-command").code == 64
    assert run_nmcm("export", QUICKSTART, "--out").code == 64


@pytest.mark.parametrize("manifest", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(manifest: Path) -> None:
    result = run_nmcm("validate", manifest)
    assert result.code == 0, result.output
    assert f"{manifest} is valid" in result.stdout
    # Every example carries the schema modeline for editors.
    first = manifest.read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    schema = (manifest.parent / first.split("=", 1)[1]).resolve()
    assert schema == ROOT / "schemas" / "cluster.schema.json"


def test_validate_json_lists_located_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = QUICKSTART.read_text().replace('mac: "02:4e:4d:00:00:02"', "mac: 12:34:56:12:34:56")
    text = text.replace("epochs: 5", "epochs: 0")
    bad.write_text(text)
    result = run_nmcm("validate", "-o", "json", bad, QUICKSTART)
    assert result.code == 1
    doc = json.loads(result.stdout)
    assert doc["format_version"] == 1
    assert doc["valid"] is False
    errors = doc["errors"]
    assert {e["file"] for e in errors} == {str(bad)}
    by_path = {e["path"]: e for e in errors}
    epochs_line = text.splitlines().index("    epochs: 0") + 1
    assert by_path["spec.training.epochs"]["line"] == epochs_line
    assert "quote it" in by_path["spec.nodes[1].w5500.mac"]["message"]
    assert set(errors[0]) == {"file", "line", "column", "path", "message"}


def test_validate_text_format_and_github_annotations(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(QUICKSTART.read_text().replace("epochs: 5", "epochs: -1"))
    line = bad.read_text().splitlines().index("    epochs: -1") + 1
    result = run_nmcm("validate", bad, env={"GITHUB_ACTIONS": "true"})
    assert result.code == 1
    assert f"{bad}:{line}:13: spec.training.epochs:" in result.stderr
    assert f"::error file={bad},line={line},col=13::spec.training.epochs:" in result.stdout


def test_validate_of_inline_manifest_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from nmcm_deploy.cli import main\n"
        f"sys.argv = ['nmcm', 'validate', {str(QUICKSTART)!r}]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_export_writes_blob_header_and_plan_per_node(tmp_path: Path) -> None:
    out = tmp_path / "export"
    result = run_nmcm("export", QUICKSTART, "--out", out, "-o", "json")
    assert result.code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["format_version"] == 1
    assert [s["node"] for s in doc["stages"]] == ["f413", "h7a3"]
    assert [s["layers"] for s in doc["stages"]] == [[0, 3], [4, 5]]
    # conv2d 1->8 k3: 72 + 8; linear 128->10: 1280 + 10.
    assert [s["parameters"] for s in doc["stages"]] == [80, 1290]
    for stage in doc["stages"]:
        folder = out / stage["node"]
        blob = (folder / "stage.blob").read_bytes()
        assert blob[:4] == b"NMCB" and len(blob) == stage["blob_bytes"]
        plan = json.loads((folder / "memory-plan.json").read_text())
        assert plan["arena_bytes"] == stage["arena_bytes"]
        assert stage["fits"] is True
        assert "kStageIndex = " + str(stage["stage"]) in (folder / "nmcm_stage.h").read_text()


def test_export_table_in_text_mode(tmp_path: Path) -> None:
    result = run_nmcm("export", QUICKSTART, "--out", tmp_path / "e")
    assert result.code == 0, result.output
    for word in ("f413", "h7a3", "stm32f413zh", "stm32h7a3zi", "yes"):
        assert word in result.stdout


def test_export_refuses_a_stage_that_does_not_fit(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(
        QUICKSTART.read_text()
        .replace("out_channels: 8", "out_channels: 64")
        .replace("batch_size: 16", "batch_size: 512")
    )
    result = run_nmcm("export", big, "--out", tmp_path / "e")
    assert result.code == 1
    # The fit check of validate runs first and points at the stage that is too big.
    assert ":45:7: spec.stages[0]: stage 0" in result.stderr
    assert "too many" in result.stderr
    assert "Traceback" not in result.output


def test_generated_header_compiles(tmp_path: Path) -> None:
    out = tmp_path / "export"
    assert run_nmcm("export", QUICKSTART, "--out", out).code == 0
    source = tmp_path / "use.cpp"
    source.write_text(
        '#include "nmcm_stage.h"\n'
        "static_assert(nmcm::generated::kStageCount == 2);\n"
        # Stage 1 is layers 4-5 of the digits CNN: linear (code 1) then softmax (code 5).
        "static_assert(nmcm::generated::kLayerCount == 2);\n"
        "static_assert(nmcm::generated::kLayers[0].kind == 1);\n"
        "static_assert(nmcm::generated::kLayers[1].kind == 5);\n"
        "static_assert(!nmcm::generated::kHasDownstream && nmcm::generated::kHasUpstream);\n"
        "int main() { return nmcm::generated::kListenPort == 5001 ? 0 : 1; }\n"
    )
    compiled = subprocess.run(
        [
            "g++",
            "-std=c++17",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-I",
            str(out / "h7a3"),
            str(source),
            "-o",
            str(tmp_path / "use"),
        ],
        capture_output=True,
        text=True,
    )
    assert compiled.returncode == 0, compiled.stderr
    assert subprocess.run([str(tmp_path / "use")]).returncode == 0
