"""`nmcm apply FILE`: make the cluster match the manifest, train if the job changed, report."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from nmcm_deploy import terminal
from nmcm_deploy.cli.options import (
    OutputFormat,
    output_option,
    sim_network_option,
    target_option,
)

if TYPE_CHECKING:
    from nmcm_deploy.artifacts import RunSummary
    from nmcm_deploy.coordinator.job import EpochResult
    from nmcm_deploy.reconcile.desired import Change
    from nmcm_deploy.reconcile.state import ClusterState
    from nmcm_deploy.targets.base import Prepared


def register(app: typer.Typer) -> None:
    app.command(
        "apply",
        help=(
            "Reconcile the cluster with the manifest: export, build each node, start the nodes "
            "that changed, run the training job if its inputs changed, write model.pt, "
            "metrics.json, report.md and training.png, and print the summary.\n\n"
            "Example: nmcm apply manifests/quickstart.yaml"
        ),
    )(apply)


class TerminalReporter:
    """Progress lines on stderr (silent when the output is JSON)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def step(self, message: str) -> None:
        if not self.quiet:
            terminal.info(f"- {message}")


def apply(
    file: Path = typer.Argument(..., help="Manifest file.", show_default=False),
    target: str | None = target_option(),
    sim_network: str | None = sim_network_option(),
    out: Path | None = typer.Option(
        None, "--out", help="Where the artifacts go (default .nmcm/<cluster>/)."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan; change nothing."),
    output: OutputFormat = output_option(),
) -> None:
    from nmcm_deploy.cli.plan import plan_markdown, print_plan
    from nmcm_deploy.reconcile.cluster import deploy_nodes, plan_changes, prepare
    from nmcm_deploy.reconcile.desired import Change, Op

    quiet = output is OutputFormat.json
    prepared = prepare(file, target, sim_network=sim_network)
    artifacts = out or prepared.store.dir
    name = prepared.cluster.name
    if dry_run:
        _, _, changes = plan_changes(prepared)
        if quiet:
            terminal.emit_json({**_result(name, changes, ""), "dry_run": True})
        else:
            print_plan(name, prepared.target, changes)
        return

    with prepared.store.lock("apply"):
        state, observed, changes = plan_changes(prepared)
        if not (artifacts / "model.pt").exists() and not any(c.op is Op.TRAIN for c in changes):
            changes.append(Change(Op.TRAIN, reason=f"no artifacts in {artifacts}"))
        if not changes:
            remember_spec(prepared, state)
            if quiet:
                terminal.emit_json(_result(name, [], state.job.artifacts))
            else:
                terminal.success(f"{name}: nothing to do; the cluster matches the manifest")
            terminal.step_summary(plan_markdown(name, prepared.target, []))
            return
        if not quiet:
            print_plan(name, prepared.target, changes)
        deploy_nodes(prepared, state, observed, changes, TerminalReporter(quiet))
        if not any(c.op is Op.TRAIN for c in changes):
            remember_spec(prepared, state)
            if quiet:
                terminal.emit_json(_result(name, changes, state.job.artifacts))
            else:
                terminal.success(f"{name}: nodes reconciled; the training job is unchanged")
            terminal.step_summary(plan_markdown(name, prepared.target, changes))
            return
        summary = _train(prepared, state, artifacts, quiet)
        remember_spec(prepared, state)

    from nmcm_deploy.artifacts import report_markdown

    if quiet:
        terminal.emit_json({**_result(name, changes, str(artifacts)), "metrics": summary.metrics()})
    else:
        print_summary(summary)
        terminal.success(f"artifacts in {artifacts}")
    terminal.step_summary(report_markdown(summary))


def remember_spec(prepared: Prepared, state: ClusterState) -> None:
    """The spec this apply finished with, for `plan` to name what changes next."""
    from nmcm_deploy.reconcile.fields import as_data

    spec = as_data(prepared.manifest.raw.get("spec", {}))
    if spec != state.spec:  # a no-op apply writes nothing
        state.spec = spec
        prepared.store.save(state)


def _result(cluster: str, changes: list[Change], artifacts: str) -> dict[str, Any]:
    return {"cluster": cluster, "changes": [c.as_dict() for c in changes], "artifacts": artifacts}


def _epoch_line(e: EpochResult, total: int) -> str:
    tested = "no test set" if e.test_accuracy is None else f"test accuracy {e.test_accuracy:.3f}"
    return (
        f"epoch {e.epoch}/{total}: loss {e.loss:.4f}, train accuracy {e.train_accuracy:.3f}, "
        f"{tested} ({e.seconds:.1f} s)"
    )


HEARTBEAT_S = 10.0


def heartbeat_seconds() -> float:
    """Seconds between two progress lines in a non-interactive log (``NMCM_HEARTBEAT_S``)."""
    try:
        return max(0.0, float(os.environ.get("NMCM_HEARTBEAT_S", HEARTBEAT_S)))
    except ValueError:
        return HEARTBEAT_S


def _train(prepared: Prepared, state: ClusterState, artifacts: Path, quiet: bool) -> RunSummary:
    from nmcm_deploy.reconcile.train import run_job

    total = prepared.manifest.training.epochs
    if quiet:
        return run_job(prepared, state, artifacts)
    if not terminal.interactive():
        # A log (CI, a pipe): a line per epoch, and a heartbeat between them so that a long
        # epoch (QEMU, boards) never leaves the log silent for minutes.
        every = heartbeat_seconds()
        start = last = time.monotonic()

        def on_epoch(e: EpochResult) -> None:
            terminal.info(_epoch_line(e, total))

        def heartbeat(epoch: int, done: int, batches: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= every and done < batches:
                last = now
                terminal.info(
                    f"training: batch {done}/{batches} (epoch {epoch}/{total}), "
                    f"{now - start:.0f} s [host clock]"
                )

        return run_job(prepared, state, artifacts, on_epoch=on_epoch, on_batch=heartbeat)

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("batches"),
        TimeElapsedColumn(),
        console=terminal.err(),
        transient=True,
    ) as progress:
        task = progress.add_task("train", total=None)

        def on_batch(epoch: int, done: int, batches: int) -> None:
            progress.update(task, completed=done, total=batches)

        def on_epoch_live(e: EpochResult) -> None:
            progress.console.print(_epoch_line(e, total), markup=False, highlight=False)

        return run_job(prepared, state, artifacts, on_epoch=on_epoch_live, on_batch=on_batch)


def print_summary(summary: RunSummary) -> None:
    from nmcm_deploy.artifacts import ELF_COLUMNS, elf_rows

    hb = terminal.human_bytes
    terminal.table(
        f"{summary.cluster}: trained in {summary.wall_time_s:.1f} s [host clock] "
        f"({summary.target}, {summary.schedule}, {summary.micro_batches} micro-batch(es)); "
        f"node times [{summary.time_source}]",
        [
            "node",
            "MCU",
            "stage",
            "layers",
            "params",
            "SRAM used / avail.",
            "flash used / avail.",
            "compute s",
            "comm s",
            "idle s",
            "sent",
        ],
        [
            (
                n.name,
                n.mcu,
                n.stage,
                f"{n.layers[0]}-{n.layers[1]}",
                n.parameters,
                f"{hb(n.sram_bytes)} / {hb(n.sram_capacity)}",
                f"{hb(n.flash_bytes)} / {hb(n.flash_capacity)}",
                f"{n.compute_s:.3f}",
                f"{n.comm_s:.3f}",
                f"{n.idle_s:.3f}",
                hb(n.bytes_sent),
            )
            for n in summary.nodes
        ],
    )
    rows = elf_rows(summary)
    if rows:
        terminal.table(
            "memory per region from each node's image [elf], beside the memory plan [plan]",
            list(ELF_COLUMNS),
            rows,
        )
    run = summary.modelled_run()
    if run is not None:
        terminal.table(
            f"on the MCUs: {run['run_s']:.2f} s for this run, {run['epoch_s']:.2f} s an epoch "
            "[model]",
            ["node", "compute s", "comm s", "idle s"],
            [
                (n["name"], f"{n['compute_s']:.3f}", f"{n['comm_s']:.3f}", f"{n['idle_s']:.3f}")
                for n in run["nodes"]
            ],
        )
    from nmcm_deploy.artifacts import INSTRUCTION_COLUMNS, instruction_rows

    rows = instruction_rows(summary)
    if rows:
        terminal.table(
            "instructions of the first training step (QEMU, -icount)", INSTRUCTION_COLUMNS, rows
        )
    terminal.table(
        "epochs",
        ["epoch", "loss", "train acc.", "test acc.", "seconds"],
        [
            (
                e.epoch,
                f"{e.loss:.4f}",
                f"{e.train_accuracy:.4f}",
                "-" if e.test_accuracy is None else f"{e.test_accuracy:.4f}",
                f"{e.seconds:.2f}",
            )
            for e in summary.epochs
        ],
    )
    for warning in summary.warnings:
        terminal.warning(warning)
