"""`nmcm status [FILE]`: live state per node — reachable, in sync, healthy — and the job."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from nmcm_deploy import terminal
from nmcm_deploy.cli.options import OutputFormat, output_option


def register(app: typer.Typer) -> None:
    app.command(
        "status",
        help=(
            "Ask every node of the cluster (or of every cluster in .nmcm/ when no FILE is given) "
            "how it is: reachable, Synced/OutOfSync with the manifest, Healthy, Degraded, "
            "Unresponsive (there but silent), Foreign (its port answers for another cluster) or "
            "Missing, "
            "stage, step, last loss, memory; and how the training job ended. Exit 0 only when "
            "every node is healthy and in sync and the job did not fail.\n\n"
            "Example: nmcm status manifests/quickstart.yaml"
        ),
    )(status)


def status(
    file: Path | None = typer.Argument(None, help="Manifest file.", show_default=False),
    output: OutputFormat = output_option(),
) -> None:
    from nmcm_deploy.reconcile.state import StateStore, state_root

    clusters: list[tuple[str, dict[str, str] | None, str | None]] = []
    if file is not None:
        from nmcm_deploy.compiler.cluster import headers_without_torch
        from nmcm_deploy.costs import planner
        from nmcm_deploy.manifest import load_manifest

        manifest = load_manifest(file)
        if manifest.model.source is None:  # a factory's headers need torch: status goes without
            manifest = planner.resolve_manifest(manifest)
        recorded = StateStore(manifest.name).load()
        target = recorded.target or manifest.target
        headers = headers_without_torch(manifest, target, planner.resolve)
        clusters.append((manifest.name, headers, target))
    else:
        root = state_root()
        for path in sorted(root.glob("*/state.json")) if root.is_dir() else []:
            clusters.append((path.parent.name, None, None))
        if not clusters:
            terminal.info(f"no clusters recorded under {root}")
    docs = [_cluster_status(name, headers, target) for name, headers, target in clusters]
    healthy = all(d["healthy"] for d in docs) and bool(docs)
    if output is OutputFormat.json:
        terminal.emit_json({"clusters": docs, "healthy": healthy})
    else:
        for d in docs:
            _print(d)
    raise typer.Exit(0 if healthy else 1)


def _cluster_status(
    name: str, headers: dict[str, str] | None, target: str | None
) -> dict[str, Any]:
    from nmcm_deploy.build.host import firmware_key
    from nmcm_deploy.reconcile.desired import NodeField
    from nmcm_deploy.reconcile.health import Health, Sync, node_health, node_sync
    from nmcm_deploy.reconcile.state import StateStore
    from nmcm_deploy.targets.observer import node_status
    from nmcm_deploy.targets.registry import of_node

    state = StateStore(name).load()
    target = target or state.target or "sim"
    names = list(state.nodes)
    if headers is not None:
        names = list(headers) + [n for n in state.nodes if n not in headers]
    nodes = []
    for node_name in names:
        record = state.nodes.get(node_name)
        row: dict[str, Any] = {
            "name": node_name,
            "reachable": False,
            "sync": Sync.UNKNOWN.value,
            "health": Health.MISSING.value,
        }
        # What is known of the desired node without compiling the model: its stage and, in
        # sim, its image's key (a board's or QEMU image's key needs the blob).
        want: dict[NodeField, str] = {}
        if headers is not None and node_name in headers:
            want[NodeField.STAGE] = str(list(headers).index(node_name))
            if target == "sim":
                want[NodeField.FIRMWARE] = firmware_key(headers[node_name], target)
        removed = headers is not None and node_name not in headers
        if record is None:
            row["sync"] = Sync.OUT_OF_SYNC.value
            nodes.append(row)
            continue
        row.update(stage=record.stage, mcu=record.mcu, port=record.port, pid=record.pid)
        if target in ("sim", "qemu"):
            row["log"] = str(StateStore(name).log_path(node_name))  # `nmcm logs`
        answer = node_status(node_name, record, name) if of_node(record).alive(record) else None
        report = answer.report if answer is not None else None
        sync = Sync.OUT_OF_SYNC if removed else node_sync(node_name, record, want, report)
        row.update(sync=sync.value, health=node_health(answer).value)
        if answer is not None and answer.problem:
            row["problem"] = answer.problem
        elif answer is not None and answer.silent:
            row["problem"] = "does not answer"
        if report is not None:
            row.update(
                reachable=True,
                state=report.state.name.lower(),
                steps=report.steps,
                last_loss=None if math.isnan(report.last_loss) else round(report.last_loss, 6),
                arena_used=report.arena_used,
                arena_capacity=report.arena_capacity,
                uptime_s=round(report.uptime_ms / 1000, 1),
            )
        nodes.append(row)
    job: dict[str, Any] = {
        "status": state.job.status,
        "error": state.job.error,
        "artifacts": state.job.artifacts,
    }
    metrics_file = Path(state.job.artifacts) / "metrics.json" if state.job.artifacts else None
    if metrics_file is not None and metrics_file.is_file():
        with open(metrics_file) as fh:
            metrics = json.load(fh)
        if metrics.get("epochs"):
            job["final"] = metrics["epochs"][-1]
            job["wall_time_s"] = metrics.get("wall_time_s")
    healthy = (
        bool(nodes)
        and all(n["health"] == Health.HEALTHY and n["sync"] == Sync.SYNCED for n in nodes)
        and state.job.status != "failed"
    )
    return {"cluster": name, "target": target, "nodes": nodes, "job": job, "healthy": healthy}


def _print(doc: dict[str, Any]) -> None:
    hb = terminal.human_bytes
    terminal.table(
        f"{doc['cluster']} ({doc['target']}): {'healthy' if doc['healthy'] else 'NOT healthy'}",
        ["node", "stage", "reachable", "sync", "health", "step", "last loss", "arena"],
        [
            (
                n["name"],
                n.get("stage", "-"),
                "yes" if n["reachable"] else "no",
                n["sync"],
                n["health"],
                n.get("steps", "-"),
                "-" if n.get("last_loss") is None else f"{n['last_loss']:.4f}",
                f"{hb(n['arena_used'])} / {hb(n['arena_capacity'])}" if n["reachable"] else "-",
            )
            for n in doc["nodes"]
        ],
    )
    job = doc["job"]
    line = f"training job: {job['status']}"
    if job.get("final"):
        f = job["final"]
        line += f"; after epoch {f['epoch']}: loss {f['loss']:.4f}, test accuracy " + (
            "-" if f.get("test_accuracy") is None else f"{f['test_accuracy']:.3f}"
        )
    if job.get("error"):
        line += f"; error: {job['error']}"
    terminal.out().print(line, markup=False)
