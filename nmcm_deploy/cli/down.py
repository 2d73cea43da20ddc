"""`nmcm down FILE`: stop the cluster's sim nodes."""

from __future__ import annotations

from pathlib import Path

import typer

from nmcm_deploy import terminal
from nmcm_deploy.cli.options import OutputFormat, output_option
from nmcm_deploy.errors import NmcmError


def register(app: typer.Typer) -> None:
    app.command(
        "down",
        help=(
            "Stop the nodes of the manifest's cluster (sim and qemu processes); their recorded "
            "state is cleared, the trained artifacts are kept.\n\n"
            "Example: nmcm down manifests/quickstart.yaml -o json"
        ),
    )(down)


def down(
    file: Path = typer.Argument(..., help="Manifest file.", show_default=False),
    output: OutputFormat = output_option(),
) -> None:
    from nmcm_deploy.manifest import load_manifest
    from nmcm_deploy.reconcile.state import StateStore
    from nmcm_deploy.targets.observer import stop_node

    manifest = load_manifest(file)
    store = StateStore(manifest.name)
    stopped: list[str] = []
    refused: list[str] = []
    problems: dict[str, str] = {}
    with store.lock("down"):
        state = store.load()
        for name in list(state.nodes):
            problem = stop_node(name, state.nodes[name], manifest.name)
            del state.nodes[name]
            store.save(state)
            if problem:
                refused.append(name)
                problems[name] = problem
                if output is OutputFormat.text:
                    terminal.warning(f"{name}: {problem}")
            else:
                stopped.append(name)
                if output is OutputFormat.text:
                    terminal.info(f"- stopped {name}")
    if output is OutputFormat.json:
        terminal.emit_json(
            {
                "cluster": manifest.name,
                "stopped": stopped,
                "not_stopped": [{"name": n, "problem": problems[n]} for n in refused],
            }
        )
    if refused:
        raise NmcmError(
            f"{manifest.name}: not stopped: {', '.join(refused)}, whose ports another cluster's "
            "nodes answer",
            hint="stop that cluster with `nmcm down` and its own manifest",
        )
    if output is OutputFormat.text:
        terminal.success(
            f"{manifest.name}: stopped" if stopped else f"{manifest.name}: no nodes running"
        )
