"""`nmcm down FILE`: stop the cluster's sim nodes."""

from __future__ import annotations

from pathlib import Path

import typer

from nmcm_deploy import terminal
from nmcm_deploy.errors import NmcmError


def register(app: typer.Typer) -> None:
    app.command(
        "down",
        help=(
            "Stop the nodes of the manifest's cluster (sim and qemu processes); their recorded "
            "state is cleared, the trained artifacts are kept.\n\n"
            "Example: nmcm down manifests/quickstart.yaml"
        ),
    )(down)


def down(file: Path = typer.Argument(..., help="Manifest file.", show_default=False)) -> None:
    from nmcm_deploy.manifest import load_manifest
    from nmcm_deploy.reconcile.state import StateStore
    from nmcm_deploy.targets.observer import stop_node

    manifest = load_manifest(file)
    store = StateStore(manifest.name)
    with store.lock("down"):
        state = store.load()
        if not state.nodes:
            terminal.success(f"{manifest.name}: no nodes running")
            return
        refused = []
        for name in list(state.nodes):
            problem = stop_node(name, state.nodes[name], manifest.name)
            del state.nodes[name]
            store.save(state)
            if problem:
                refused.append(name)
                terminal.warning(f"{name}: {problem}")
            else:
                terminal.info(f"- stopped {name}")
    if refused:
        raise NmcmError(
            f"{manifest.name}: not stopped: {', '.join(refused)}, whose ports another cluster's "
            "nodes answer",
            hint="stop that cluster with `nmcm down` and its own manifest",
        )
    terminal.success(f"{manifest.name}: stopped")
