"""`nmcm down FILE`: stop the cluster's sim nodes."""

from __future__ import annotations

from pathlib import Path

import typer

from nmcm_deploy import terminal


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
    from nmcm_deploy.reconcile.cluster import stop_node
    from nmcm_deploy.reconcile.state import StateStore

    manifest = load_manifest(file)
    store = StateStore(manifest.name)
    with store.lock("down"):
        state = store.load()
        if not state.nodes:
            terminal.success(f"{manifest.name}: no nodes running")
            return
        for name in list(state.nodes):
            stop_node(name, state.nodes[name], manifest.name)
            del state.nodes[name]
            store.save(state)
            terminal.info(f"- stopped {name}")
    terminal.success(f"{manifest.name}: stopped")
