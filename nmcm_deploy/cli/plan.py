"""`nmcm plan FILE`: what `apply` would change, per node, without changing anything."""

from __future__ import annotations

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
from nmcm_deploy.errors import ChangesPending

if TYPE_CHECKING:
    from nmcm_deploy.reconcile.desired import Change
    from nmcm_deploy.reconcile.fields import FieldChange
    from nmcm_deploy.reconcile.state import ClusterState
    from nmcm_deploy.targets.base import Prepared


def register(app: typer.Typer) -> None:
    app.command(
        "plan",
        help=(
            "Show what `apply` would change: node builds, (re)starts and the training job.\n\n"
            "Exit codes: 0 no changes (or changes without --detailed-exitcode), 1 error, "
            "2 changes with --detailed-exitcode.\n\n"
            "Example: nmcm plan manifests/quickstart.yaml --detailed-exitcode"
        ),
    )(plan)


def plan(
    file: Path = typer.Argument(..., help="Manifest file.", show_default=False),
    target: str | None = target_option(),
    sim_network: str | None = sim_network_option(),
    detailed_exitcode: bool = typer.Option(
        False, "--detailed-exitcode", help="Exit 2 when there are changes (as terraform plan)."
    ),
    output: OutputFormat = output_option(),
) -> None:
    from nmcm_deploy.reconcile.cluster import plan_changes, prepare

    prepared = prepare(file, target, sim_network=sim_network)
    state, _, changes = plan_changes(prepared)
    fields = manifest_changes(prepared, state)
    memory = memory_changes(prepared, state)
    stages = [
        {"node": s.plan.node.name, "layers": [s.plan.first, s.plan.last]}
        for s in prepared.cluster.stages
    ]
    used = {s["node"] for s in stages}
    unused = [n.name for n in prepared.manifest.nodes if n.name not in used]
    auto = prepared.manifest.stages_auto
    training = prepared.manifest.training
    if output is OutputFormat.json:
        terminal.emit_json(
            {
                "cluster": prepared.cluster.name,
                "target": prepared.target,
                "stages": stages,
                "stages_auto": auto,
                "unused_nodes": unused,
                "micro_batches": training.micro_batches,
                "micro_batches_auto": training.micro_batches_auto,
                "changes": [c.as_dict() for c in changes],
                # Since the last apply that finished: the manifest's fields, and what the
                # compiler predicts each node takes (null before the first).
                "fields": [f.as_dict() for f in fields] if state.spec else None,
                "memory": memory,
            }
        )
    else:
        if auto:
            chosen = " -> ".join(f"{s['node']} [{s['layers'][0]}-{s['layers'][1]}]" for s in stages)
            note = f"; unused: {', '.join(unused)}" if unused else ""
            terminal.line(
                f"stages: auto: the planner's split is {chosen}{note} "
                "(`nmcm estimate` explains the choice)"
            )
        if training.micro_batches_auto:
            terminal.line(
                f"micro_batches: auto: {training.micro_batches} (the shortest modelled epoch of "
                f"the counts 1 to {training.micro_batch_choices().stop - 1} that fit)"
            )
        print_plan(prepared.cluster.name, prepared.target, changes)
        if fields:
            terminal.line("changed in the manifest since the last apply:")
            for f in fields:
                terminal.line("  " + f.text())
        for m in memory:
            hb = terminal.human_bytes
            (sram_before, sram_after), (flash_before, flash_after) = (
                m["sram_bytes"],
                m["flash_bytes"],
            )
            terminal.line(
                f"  {m['node']}: SRAM {hb(sram_before)} → {hb(sram_after)}, flash "
                f"{hb(flash_before)} → {hb(flash_after)} (the compiler's prediction)"
            )
    terminal.step_summary(plan_markdown(prepared.cluster.name, prepared.target, changes))
    if changes and detailed_exitcode:
        raise ChangesPending()


def manifest_changes(prepared: Prepared, state: ClusterState) -> list[FieldChange]:
    """The fields of the manifest's spec that differ from the last apply that finished."""
    from nmcm_deploy.reconcile.fields import as_data, changed_fields

    if not state.spec:
        return []
    return changed_fields(state.spec, as_data(prepared.manifest.raw.get("spec", {})))


def memory_changes(prepared: Prepared, state: ClusterState) -> list[dict[str, Any]]:
    """Per node whose predicted SRAM or flash would change: [recorded, desired] of each."""
    changed = []
    for desired in prepared.desired.nodes:
        recorded = state.nodes.get(desired.name)
        if recorded is None or not (recorded.sram_bytes or recorded.flash_bytes):
            continue
        before = (recorded.sram_bytes, recorded.flash_bytes)
        if before != (desired.sram_bytes, desired.flash_bytes):
            changed.append(
                {
                    "node": desired.name,
                    "sram_bytes": [recorded.sram_bytes, desired.sram_bytes],
                    "flash_bytes": [recorded.flash_bytes, desired.flash_bytes],
                }
            )
    return changed


def describe(change: Change) -> str:
    text = f"{change.op.value:7} {change.path}"
    if change.old or change.new:
        text += f"  {change.old or '-'} -> {change.new or '-'}"
    if change.reason:
        text += f"  ({change.reason})"
    return text


def print_plan(cluster: str, target: str, changes: list[Change]) -> None:
    if not changes:
        terminal.success(f"{cluster} ({target}): no changes; the cluster matches the manifest")
        return
    terminal.out().print(f"{cluster} ({target}): {len(changes)} change(s)", markup=False)
    for c in changes:
        terminal.out().print("  " + describe(c), markup=False)


def plan_markdown(cluster: str, target: str, changes: list[Change]) -> str:
    lines = [f"## nmcm plan: `{cluster}` ({target})", ""]
    if not changes:
        lines.append("No changes.")
    else:
        lines += ["| op | path | old | new | reason |", "|---|---|---|---|---|"]
        lines += [
            f"| {c.op.value} | `{c.path}` | {c.old} | {c.new} | {c.reason} |" for c in changes
        ]
    return "\n".join(lines)
