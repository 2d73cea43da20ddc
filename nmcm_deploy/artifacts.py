"""What `nmcm apply` leaves behind for users: model.pt, metrics.json, report.md, training.png.

metrics.json follows DESIGN.md ("Artifacts of apply"); more keys are allowed, none may go.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nmcm_deploy.reconcile.state import atomic_write

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
    # backward), the loss, the optimizer and their sum per_step (runtime/qemu.py).
    instructions: dict[str, Any] | None = None

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
        if self.instructions is not None:
            doc["instructions"] = self.instructions
        return doc


@dataclass(frozen=True)
class EpochSummary:
    epoch: int
    loss: float
    train_accuracy: float
    test_accuracy: float
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

    def metrics(self) -> dict[str, Any]:
        return {
            "format_version": METRICS_FORMAT,
            "cluster": self.cluster,
            "target": self.target,
            "schedule": self.schedule,
            "micro_batches": self.micro_batches,
            "epochs": [e.as_dict() for e in self.epochs],
            "wall_time_s": round(self.wall_time_s, 3),
            "nodes": [n.as_dict() for n in self.nodes],
        }


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


def report_markdown(summary: RunSummary) -> str:
    """The run as markdown: for report.md and the GitHub Actions job summary."""
    lines = [
        f"## nmcm: cluster `{summary.cluster}` ({summary.target})",
        "",
        f"Trained {len(summary.epochs)} epoch(s) in {summary.wall_time_s:.1f} s, schedule "
        f"`{summary.schedule}` with {summary.micro_batches} micro-batch(es) per batch.",
        "",
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
    lines += [
        "",
        "| epoch | loss | train accuracy | test accuracy | seconds |",
        "|---:|---:|---:|---:|---:|",
    ]
    for e in summary.epochs:
        lines.append(
            f"| {e.epoch} | {e.loss:.4f} | {e.train_accuracy:.4f} | {e.test_accuracy:.4f} "
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
    ax_acc.plot(epochs, [e.test_accuracy for e in summary.epochs], marker="s", label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.legend()
    fig.suptitle(f"{summary.cluster} ({summary.target}, {summary.schedule})")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def write_artifacts(summary: RunSummary, state_dict: dict[str, Any], out: Path) -> list[Path]:
    """model.pt, metrics.json, report.md and training.png in ``out``, each written atomically."""
    import io

    import torch

    out.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    atomic_write(out / "model.pt", buffer.getvalue())
    atomic_write(out / "metrics.json", (json.dumps(summary.metrics(), indent=2) + "\n").encode())
    atomic_write(out / "report.md", report_markdown(summary).encode())
    write_plot(summary, out / "training.png")
    return [out / n for n in ("model.pt", "metrics.json", "report.md", "training.png")]
