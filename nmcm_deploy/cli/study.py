"""`nmcm study FILE`: the permutation study (nmcm_deploy/costs/study.py) as report.md, study.json
and two plots: the best modelled epoch per configuration, and each node's memory against its
MCU's capacity."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from nmcm_deploy import terminal
from nmcm_deploy.cli.options import OutputFormat, output_option
from nmcm_deploy.errors import NmcmError

if TYPE_CHECKING:
    from nmcm_deploy.costs.study import Configuration
    from nmcm_deploy.reconcile.study_train import TrainedConfiguration

DEFAULT_MAX_NODES = 2


def register(app: typer.Typer) -> None:
    app.command(
        "study",
        help=(
            "Model every sequence of the given MCU types from 1 to --max-nodes nodes, each with "
            "every split of the manifest's model in that order: the epoch on the MCUs and "
            "whether every stage fits. Writes report.md, study.json and PNG plots into --out.\n\n"
            "Example: nmcm study manifests/quickstart.yaml --max-nodes 3 --out build/study"
        ),
    )(study)


def study(
    file: Path = typer.Argument(..., help="Manifest file.", show_default=False),
    mcus: str = typer.Option(
        "", "--mcus", help="Comma-separated MCU types (default: every MCU nmcm has a profile of)."
    ),
    max_nodes: int = typer.Option(
        DEFAULT_MAX_NODES, "--max-nodes", min=1, max=6, help="Longest sequence of nodes."
    ),
    out: Path = typer.Option(
        None, "--out", help="Folder for the results (default: .nmcm/<cluster>/study)."
    ),
    train_on: str = typer.Option(
        "",
        "--train",
        help=(
            "sim: also train each configuration (its best split) on a sim cluster of its own "
            "and report its accuracy, the same for every split of the same model."
        ),
    ),
    output: OutputFormat = output_option(),
) -> None:
    from nmcm_deploy import profiles
    from nmcm_deploy.compiler.cluster import build_model
    from nmcm_deploy.costs import study as st
    from nmcm_deploy.datasets import sample_counts
    from nmcm_deploy.files import atomic_write
    from nmcm_deploy.manifest import load_manifest
    from nmcm_deploy.reconcile.state import state_root

    # The study places the model on other sequences of MCUs: the manifest's own stages need not
    # fit (a model too big for the nodes it names is what a study is for).
    if train_on not in ("", "sim"):
        raise NmcmError(f"--train {train_on!r}: only sim is supported", hint="use --train sim")
    manifest = load_manifest(file, fit=False)
    chosen = [m.strip() for m in mcus.split(",") if m.strip()] or list(profiles.mcu_names())
    unknown = [m for m in chosen if m not in profiles.mcu_names()]
    if unknown:
        raise NmcmError(
            f"unknown MCU {unknown[0]!r}; known: {', '.join(profiles.mcu_names())}",
            hint="--mcus takes MCU profile names, comma-separated",
        )
    _, ir = build_model(manifest)
    data = manifest.dataset
    train, test = sample_counts(data.name, data.npz, data.test_fraction)
    folder = out or state_root() / manifest.name / "study"

    def progress(done: int, total: int, seq: tuple[str, ...]) -> None:
        if output is OutputFormat.text:
            terminal.info(f"[{done}/{total}] {' -> '.join(seq)}")

    configurations = st.study(manifest, ir, chosen, max_nodes, train, test, progress=progress)
    doc = {
        "cluster": manifest.name,
        "source": "model",
        "mcus": chosen,
        "max_nodes": max_nodes,
        "schedule": manifest.training.schedule,
        "micro_batches": "auto"
        if manifest.training.micro_batches_auto
        else manifest.training.micro_batches,
        "train_samples": train,
        "test_samples": test,
        "configurations": st.as_dict(configurations),
    }
    trained = []
    if train_on == "sim":
        from nmcm_deploy.reconcile.study_train import train_configurations

        def trained_one(done: int, total: int, c: Configuration) -> None:
            if output is OutputFormat.text:
                terminal.info(f"[{done}/{total}] trained {c.label} on sim")

        trained = train_configurations(file, manifest, configurations, folder, progress=trained_one)
        doc["trained"] = [t.as_dict() for t in trained]
        accuracies = {t.test_accuracy for t in trained}
        doc["same_accuracy"] = len(accuracies) <= 1
        doc["same_weights"] = len({t.weights_sha256 for t in trained}) <= 1
    atomic_write(folder / "study.json", (json.dumps(doc, indent=2) + "\n").encode())
    atomic_write(folder / "report.md", report(manifest.name, configurations, trained).encode())
    plot_epochs(configurations, folder / "epoch.png")
    plot_memory(configurations, folder / "memory.png")
    if output is OutputFormat.json:
        terminal.emit_json({**doc, "out": str(folder)})
        return
    terminal.table(
        f"{manifest.name}: best split per configuration [model]",
        ["configuration", "best split", "epoch s", "splits that fit"],
        [
            (
                c.label,
                "-" if c.best is None else c.best.label,
                "-" if c.best is None or c.best.epoch_s is None else f"{c.best.epoch_s:.2f}",
                f"{sum(s.fits for s in c.splits)} / {len(c.splits)}",
            )
            for c in configurations
        ],
    )
    if trained:
        terminal.table(
            "trained on sim (best split of each configuration) [host clock]",
            ["configuration", "split", "micro-batches", "test acc.", "loss", "wall s"],
            [
                (
                    " -> ".join(m.removeprefix("stm32") for m in t.mcus),
                    t.split,
                    t.micro_batches,
                    "-" if t.test_accuracy is None else f"{t.test_accuracy:.4f}",
                    f"{t.loss:.4f}",
                    f"{t.wall_time_s:.2f}",
                )
                for t in trained
            ],
        )
        if doc["same_weights"]:
            terminal.info("every split trained to the same weights, bit for bit")
        elif doc["same_accuracy"]:
            terminal.info("every split reached the same accuracy")
        else:
            terminal.warning("the splits reached different accuracies: see report.md")
    terminal.success(f"report.md, study.json, epoch.png and memory.png written to {folder}")


def report(
    cluster: str,
    configurations: Sequence[Configuration],
    trained: Sequence[TrainedConfiguration] = (),
) -> str:
    lines = [
        f"# nmcm study: `{cluster}`",
        "",
        "Every sequence of MCU types, each with every split of the model in that order. Epoch "
        "times are the cost model's (source: model, docs/cost-model.md); a split whose stage does "
        "not fit its MCU (exact memory plan) has none.",
        "",
        "| configuration | best split | epoch s | worst fitting split | epoch s | fit |",
        "|---|---|---:|---|---:|---:|",
    ]
    for c in configurations:
        fitting = [s for s in c.splits if s.epoch_s is not None]
        worst = max(fitting, key=lambda s: s.epoch_s or 0.0) if fitting else None
        lines.append(
            f"| {c.label} | {c.best.label if c.best else '-'} "
            f"| {f'{c.best.epoch_s:.2f}' if c.best and c.best.epoch_s else '-'} "
            f"| {worst.label if worst else '-'} "
            f"| {f'{worst.epoch_s:.2f}' if worst and worst.epoch_s else '-'} "
            f"| {len(fitting)} / {len(c.splits)} |"
        )
    if trained:
        same = len({t.weights_sha256 for t in trained}) == 1
        lines += [
            "",
            "Each configuration's best split trained on a sim cluster (`--train sim`; times: host "
            "clock). Every split computes the same model: "
            + ("the trained weights are the same, bit for bit." if same else "see the accuracies."),
            "",
            "| configuration | split | micro-batches | test accuracy | loss | wall s |",
            "|---|---|---:|---:|---:|---:|",
            *(
                f"| {' -> '.join(m.removeprefix('stm32') for m in t.mcus)} | {t.split} "
                f"| {t.micro_batches} "
                f"| {'-' if t.test_accuracy is None else f'{t.test_accuracy:.4f}'} "
                f"| {t.loss:.4f} | {t.wall_time_s:.2f} |"
                for t in trained
            ),
        ]
    return "\n".join(lines) + "\n"


def _bar_chart(
    path: Path,
    labels: Sequence[str],
    values: Sequence[float],
    ylabel: str,
    title: str,
    limit: float | None = None,
) -> None:
    """A PNG bar chart (matplotlib without a display), with a red line at ``limit``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(labels) + 2), 4))
    try:
        ax.bar(list(labels), list(values))
        if limit is not None:
            ax.axhline(limit, color="red", linewidth=1)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=60)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)


def plot_epochs(configurations: Sequence[Configuration], path: Path) -> None:
    """The best modelled epoch of every configuration that has a fitting split."""
    shown = [(c.label, c.best.epoch_s) for c in configurations if c.best and c.best.epoch_s]
    _bar_chart(
        path,
        [label for label, _ in shown],
        [epoch for _, epoch in shown],
        "epoch, s (model)",
        "best split per configuration",
    )


def plot_memory(configurations: Sequence[Configuration], path: Path) -> None:
    """SRAM of each node of each configuration's best split, as a share of its MCU's."""
    labels, shares = [], []
    for c in configurations:
        if c.best is None:
            continue
        for k, stage in enumerate(c.best.stages):
            labels.append(f"{c.label} #{k}")
            shares.append(100.0 * stage.sram_bytes / stage.sram_capacity)
    _bar_chart(
        path,
        labels,
        shares,
        "SRAM used, % of the MCU's",
        "memory per node, best split (exact memory plan)",
        limit=100.0,
    )
