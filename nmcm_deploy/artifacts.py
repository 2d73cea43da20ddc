"""What `nmcm apply` leaves behind for users: model.pt, metrics.json, report.md, training.png.

metrics.json follows DESIGN.md ("Artifacts of apply"); more keys are allowed, none may go.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmcm_deploy.errors import NmcmError

METRICS_FORMAT = 1


@dataclass(frozen=True)
class NodeSummary:
    name: str
    mcu: str
    stage: int
    layers: tuple[int, int]
    parameters: int
    flash_bytes: int
    flash_capacity: int
    sram_bytes: int
    sram_capacity: int
    compute_s: float
    comm_s: float
    idle_s: float
    bytes_sent: int
    arena_bytes: int
    # qemu: instructions of the node's first training step, per layer of its stage (forward,
    # backward), the loss, the optimizer and their sum per_step (targets/qemu.py).
    instructions: dict[str, Any] | None = None
    # qemu and hardware: what the node's ARM image takes per memory region, from its ELF
    # (build/elfsize.py), beside the plan's flash_bytes and sram_bytes above.
    elf: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        doc = {
            "name": self.name,
            "mcu": self.mcu,
            "stage": self.stage,
            "layers": list(self.layers),
            "parameters": self.parameters,
            "flash_bytes": self.flash_bytes,
            "flash_capacity": self.flash_capacity,
            "sram_bytes": self.sram_bytes,
            "sram_capacity": self.sram_capacity,
            "arena_bytes": self.arena_bytes,
            "compute_s": round(self.compute_s, 6),
            "comm_s": round(self.comm_s, 6),
            "idle_s": round(self.idle_s, 6),
            "bytes_sent": self.bytes_sent,
        }
        if self.elf is not None:
            doc["elf"] = self.elf
        if self.instructions is not None:
            doc["instructions"] = self.instructions
        return doc


@dataclass(frozen=True)
class EpochSummary:
    epoch: int
    loss: float
    train_accuracy: float
    test_accuracy: float | None  # None without a test set
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "loss": self.loss,
            "train_accuracy": self.train_accuracy,
            "test_accuracy": self.test_accuracy,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class RunSummary:
    cluster: str
    target: str
    schedule: str
    micro_batches: int
    epochs: Sequence[EpochSummary]
    wall_time_s: float
    nodes: Sequence[NodeSummary]
    warnings: Sequence[str] = ()
    window: int = 1  # micro-batches in flight at most, as run
    micro_batches_run: Mapping[int, int] = field(default_factory=dict)  # count -> batches
    # What the nodes' compute/comm/idle figures were measured with: "host clock" (sim), "qemu
    # instructions" (one per nanosecond), "dwt cycles" (boards). wall_time_s is the host clock.
    time_source: str = "host clock"
    # The cost model's estimate for the same cluster (costs/model.py, Estimate.as_dict): time
    # on the MCUs, per epoch.
    modelled: Mapping[str, Any] | None = None

    def modelled_run(self) -> dict[str, Any] | None:
        """The model's figures for the whole run (its epochs), per node, labelled."""
        if self.modelled is None:
            return None
        epochs = len(self.epochs)
        return {
            "source": "model",
            "epoch_s": self.modelled["epoch_s"],
            "step_s": self.modelled["step_s"],
            "run_s": round(self.modelled["epoch_s"] * epochs, 6),
            "nodes": [
                {
                    "name": n["name"],
                    "compute_s": round(n["compute_s"] * epochs, 6),
                    "comm_s": round(n["comm_s"] * epochs, 6),
                    "idle_s": round(n["idle_s"] * epochs, 6),
                }
                for n in self.modelled["nodes"]
            ],
        }

    def metrics(self) -> dict[str, Any]:
        return {
            "format_version": METRICS_FORMAT,
            "cluster": self.cluster,
            "target": self.target,
            "schedule": self.schedule,
            "micro_batches": self.micro_batches,
            # What ran: the manifest's micro_batches is an upper bound (a batch smaller than it
            # runs one micro-batch per sample), the window the nodes' slots allowed.
            "window": self.window,
            "micro_batches_run": [
                {"micro_batches": m, "batches": n}
                for m, n in sorted(self.micro_batches_run.items())
            ],
            "epochs": [e.as_dict() for e in self.epochs],
            "wall_time_s": round(self.wall_time_s, 3),
            # Every time figure says where it comes from: the wall time is the host's clock,
            # the nodes' compute/comm/idle this source, "model" the cost model's.
            "time_sources": {"wall_time_s": "host clock", "nodes": self.time_source},
            "nodes": [n.as_dict() for n in self.nodes],
            "model": self.modelled_run(),
            "warnings": list(self.warnings),
        }


def _accuracy(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _pct(used: int, capacity: int) -> str:
    return f"{100.0 * used / capacity:.1f}%" if capacity else "-"


INSTRUCTION_COLUMNS = ("node", "layer", "type", "forward", "backward", "total")


def instruction_rows(summary: RunSummary) -> list[tuple[str, ...]]:
    """The instructions of one training step per node and layer (qemu only; empty otherwise):
    one row per layer of the node's stage, then its loss (last stage), optimizer step and the
    step's total."""
    rows: list[tuple[str, ...]] = []
    for n in summary.nodes:
        counts = n.instructions
        if counts is None:
            continue
        types = list(counts.get("layer_types", []))
        forward, backward = counts["forward"], counts["backward"]
        for i, (f, b) in enumerate(zip(forward, backward, strict=True)):
            kind = types[i] if i < len(types) else ""
            rows.append((n.name, str(n.layers[0] + i), kind, f"{f:,}", f"{b:,}", f"{f + b:,}"))
        if counts["loss"]:
            rows.append((n.name, "", "loss", "", "", f"{counts['loss']:,}"))
        rows.append((n.name, "", "optimizer", "", "", f"{counts['optimizer']:,}"))
        rows.append(
            (
                n.name,
                "",
                f"step ({counts['samples']} samples)",
                f"{sum(forward):,}",
                f"{sum(backward):,}",
                f"{counts['per_step']:,}",
            )
        )
    return rows


ELF_COLUMNS = ("node", "region", "kind", "used", "capacity", "plan")


def elf_rows(summary: RunSummary) -> list[tuple[str, ...]]:
    """One row per memory region of each node's ARM image (ELF_COLUMNS); the plan's figures on
    the node's first row. Empty when no node has an ARM image (sim)."""
    rows: list[tuple[str, ...]] = []
    for n in summary.nodes:
        if n.elf is None:
            continue
        plan = f"SRAM {n.sram_bytes:,}, flash {n.flash_bytes:,}"
        for i, r in enumerate(n.elf["regions"]):
            used, capacity = r["used_bytes"], r["capacity"]
            rows.append(
                (
                    n.name if i == 0 else "",
                    r["name"],
                    r["kind"],
                    f"{used:,}",
                    f"{capacity:,} ({_pct(used, capacity)})",
                    plan if i == 0 else "",
                )
            )
    return rows


def report_markdown(summary: RunSummary) -> str:
    """The run as markdown: for report.md and the GitHub Actions job summary."""
    lines = [
        f"## nmcm: cluster `{summary.cluster}` ({summary.target})",
        "",
        f"Trained {len(summary.epochs)} epoch(s) in {summary.wall_time_s:.1f} s (host clock), "
        f"schedule `{summary.schedule}` with {summary.micro_batches} micro-batch(es) per batch.",
        "",
        *(f"> **Warning:** {w}\n" for w in summary.warnings),
        "| node | MCU | stage | layers | parameters | SRAM used / available "
        "| flash used / available | compute s | comm s | idle s | bytes sent |",
        "|---|---|---:|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for n in summary.nodes:
        lines.append(
            f"| {n.name} | {n.mcu} | {n.stage} | {n.layers[0]}-{n.layers[1]} | {n.parameters} "
            f"| {n.sram_bytes:,} / {n.sram_capacity:,} ({_pct(n.sram_bytes, n.sram_capacity)}) "
            f"| {n.flash_bytes:,} / {n.flash_capacity:,} ({_pct(n.flash_bytes, n.flash_capacity)}) "
            f"| {n.compute_s:.3f} | {n.comm_s:.3f} | {n.idle_s:.3f} | {n.bytes_sent:,} |"
        )
    lines += [f"\nNode times above: {summary.time_source}; the wall time: host clock.", ""]
    rows = elf_rows(summary)
    if rows:
        lines += [
            "Memory of each node's image per region, from its ELF (source: elf), beside the "
            "memory plan's SRAM and flash above (source: plan):",
            "",
            "| " + " | ".join(ELF_COLUMNS) + " |",
            "|---|---|---|---:|---:|---|",
            *("| " + " | ".join(row) + " |" for row in rows),
            "",
        ]
    run = summary.modelled_run()
    if run is not None:
        lines += [
            f"On the MCUs, the cost model puts this run at {run['run_s']:.2f} s "
            f"({run['epoch_s']:.2f} s an epoch; source: model, docs/cost-model.md):",
            "",
            "| node | compute s (model) | comm s (model) | idle s (model) |",
            "|---|---:|---:|---:|",
            *(
                f"| {n['name']} | {n['compute_s']:.3f} | {n['comm_s']:.3f} | {n['idle_s']:.3f} |"
                for n in run["nodes"]
            ),
        ]
    lines += [
        "",
        "| epoch | loss | train accuracy | test accuracy | seconds |",
        "|---:|---:|---:|---:|---:|",
    ]
    for e in summary.epochs:
        lines.append(
            f"| {e.epoch} | {e.loss:.4f} | {e.train_accuracy:.4f} | {_accuracy(e.test_accuracy)} "
            f"| {e.seconds:.2f} |"
        )
    rows = instruction_rows(summary)
    if rows:
        lines += [
            "",
            "Instructions of the first training step (QEMU, `-icount`; deterministic):",
            "",
            "| " + " | ".join(INSTRUCTION_COLUMNS) + " |",
            "|---|---:|---|---:|---:|---:|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_plot(summary: RunSummary, path: Path) -> None:
    """Loss and accuracy per epoch, as a PNG (matplotlib without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [e.epoch for e in summary.epochs]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_loss.plot(epochs, [e.loss for e in summary.epochs], marker="o")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss")
    ax_acc.plot(epochs, [e.train_accuracy for e in summary.epochs], marker="o", label="train")
    tested = [e for e in summary.epochs if e.test_accuracy is not None]
    if tested:
        ax_acc.plot(
            [e.epoch for e in tested], [e.test_accuracy for e in tested], marker="s", label="test"
        )
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.legend()
    fig.suptitle(f"{summary.cluster} ({summary.target}, {summary.schedule})")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)


ARTIFACTS = ("model.pt", "metrics.json", "report.md", "training.png")
# The sets live in out/.artifacts/<run>/; out/.artifacts/current points at one, and each artifact
# name in out points through it.
SETS = ".artifacts"
CURRENT = "current"


class ArtifactError(NmcmError):
    """The artifacts could not be written (a read-only or full file system, say)."""


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _link(target: str, path: Path) -> None:
    """Make ``path`` a symlink to ``target`` in one rename (whatever ``path`` was before)."""
    if path.is_symlink() and os.readlink(path) == target:
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.link")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, path)


def write_artifacts(summary: RunSummary, state_dict: dict[str, Any], out: Path) -> list[Path]:
    """model.pt, metrics.json, report.md and training.png in ``out``, as one set.

    The set is written whole into a folder of its own under out/.artifacts/, then made current
    by renaming one symlink over out/.artifacts/current; each artifact in ``out`` is a symlink
    through it. So ``out`` holds the last complete set, never a mix of two runs, whenever the
    writing stops (a kill, a full disk). Raises ArtifactError naming the path that failed.
    """
    import io

    import torch

    sets = out / SETS
    run = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{time.monotonic_ns() % 10**6:06d}"
    folder = sets / run
    switched = False
    try:
        folder.mkdir(parents=True)
        buffer = io.BytesIO()
        torch.save(state_dict, buffer)
        _write_file(folder / "model.pt", buffer.getvalue())
        metrics = json.dumps(summary.metrics(), indent=2, allow_nan=False) + "\n"
        _write_file(folder / "metrics.json", metrics.encode())
        _write_file(folder / "report.md", report_markdown(summary).encode())
        write_plot(summary, folder / "training.png")
        _link(run, sets / CURRENT)
        switched = True
        for name in ARTIFACTS:
            _link(f"{SETS}/{CURRENT}/{name}", out / name)
    except OSError as exc:
        if not switched:  # else it is the current set already
            shutil.rmtree(folder, ignore_errors=True)
        where = exc.filename or folder
        raise ArtifactError(
            f"cannot write the artifacts: {where}: {exc.strerror or exc}",
            hint="choose another folder with --out",
        ) from None
    for old in sets.iterdir():
        if old.name not in (run, CURRENT) and not old.name.startswith("."):
            shutil.rmtree(old, ignore_errors=True)
    return [out / name for name in ARTIFACTS]
