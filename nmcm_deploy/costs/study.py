"""The permutation study: for a manifest's model and training job, every sequence of the given MCU
types from 1 to K nodes (F413; H7A3; F413 -> F413; F413 -> H7A3; H7A3 -> F413; ...), each with
every split of the model into that many contiguous stages, in that order: whether each stage fits
its MCU (the exact memory plan) and the modelled epoch (model.py). Pure: the command
(cli/study.py) writes the report, the JSON and the plots.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

from nmcm_deploy.compiler.cluster import plan_pipeline
from nmcm_deploy.compiler.ir import ModelIR
from nmcm_deploy.costs import model
from nmcm_deploy.manifest.model import Manifest, NodeSpec


@dataclass(frozen=True)
class StageUse:
    node: str
    mcu: str
    layers: tuple[int, int]
    sram_bytes: int
    sram_capacity: int
    flash_bytes: int
    flash_capacity: int

    @property
    def fits(self) -> bool:
        return self.sram_bytes <= self.sram_capacity and self.flash_bytes <= self.flash_capacity


@dataclass(frozen=True)
class Split:
    """One split of the model over one sequence of MCUs."""

    stages: tuple[StageUse, ...]
    epoch_s: float | None  # None: a stage does not fit
    micro_batches: int  # the manifest's, or under `micro_batches: auto` the best that fits

    @property
    def fits(self) -> bool:
        return all(s.fits for s in self.stages)

    @property
    def label(self) -> str:
        return " | ".join(f"{s.layers[0]}-{s.layers[1]}" for s in self.stages)


@dataclass(frozen=True)
class Configuration:
    """A sequence of MCU types, in pipeline order, and every split of the model over it."""

    mcus: tuple[str, ...]
    splits: tuple[Split, ...]

    @property
    def label(self) -> str:
        return " -> ".join(m.removeprefix("stm32") for m in self.mcus)

    @property
    def best(self) -> Split | None:
        fitting = [s for s in self.splits if s.epoch_s is not None]
        return min(fitting, key=lambda s: s.epoch_s or 0.0) if fitting else None


def sequences(mcus: Sequence[str], max_nodes: int) -> Iterator[tuple[str, ...]]:
    """Every ordered sequence of the MCU types from 1 to ``max_nodes`` long, shortest first."""
    for length in range(1, max_nodes + 1):
        yield from itertools.product(mcus, repeat=length)


def cuts(layers: int, parts: int) -> Iterator[tuple[tuple[int, int], ...]]:
    """Every way to cut ``layers`` layers into exactly ``parts`` contiguous, non-empty ranges."""
    for inner in itertools.combinations(range(1, layers), parts - 1):
        bounds = (0, *inner, layers)
        yield tuple((bounds[k], bounds[k + 1] - 1) for k in range(parts))


def study(
    manifest: Manifest,
    ir: ModelIR,
    mcus: Sequence[str],
    max_nodes: int,
    train_samples: int,
    test_samples: int,
    *,
    progress: Callable[[int, int, tuple[str, ...]], None] | None = None,
) -> list[Configuration]:
    """Every configuration of the study (module docstring); ``progress(done, total, mcus)``
    after each."""
    todo = [s for s in sequences(mcus, max_nodes) if len(s) <= len(ir.layers)]
    training = manifest.training
    counts = (
        training.micro_batch_choices() if training.micro_batches_auto else [training.micro_batches]
    )
    out = []
    for done, seq in enumerate(todo, start=1):
        nodes = tuple(NodeSpec(f"n{i}-{m}", m, None, None, None) for i, m in enumerate(seq))
        cluster = replace(manifest, nodes=nodes, stages=(), stages_auto=False)
        splits = []
        for ranges in cuts(len(ir.layers), len(seq)):
            pipeline = [(n.name, a, b) for n, (a, b) in zip(nodes, ranges, strict=True)]
            options = [
                _split(cluster, ir, pipeline, count, train_samples, test_samples)
                for count in counts
            ]
            fitting = [s for s in options if s.epoch_s is not None]
            # The fastest count that fits (the fewest among equals); else the first's memory.
            splits.append(min(fitting, key=lambda s: s.epoch_s or 0.0) if fitting else options[0])
        out.append(Configuration(seq, tuple(splits)))
        if progress is not None:
            progress(done, len(todo), seq)
    return out


def _split(
    cluster: Manifest,
    ir: ModelIR,
    pipeline: Sequence[tuple[str, int, int]],
    micro_batches: int,
    train_samples: int,
    test_samples: int,
) -> Split:
    cluster = replace(cluster, training=replace(cluster.training, micro_batches=micro_batches))
    plan = plan_pipeline(cluster, ir, pipeline)
    uses = tuple(
        StageUse(
            s.node.name,
            s.node.mcu,
            (s.first, s.last),
            s.fit.sram_bytes,
            s.fit.sram_capacity,
            s.fit.flash_bytes,
            s.fit.flash_capacity,
        )
        for s in plan.stages
    )
    epoch = None
    if all(u.fits for u in uses):
        epoch = model.estimate(plan, cluster.training, train_samples, test_samples).epoch_s
    return Split(uses, epoch, micro_batches)


def as_dict(configurations: Sequence[Configuration]) -> list[dict[str, object]]:
    def split(s: Split) -> dict[str, object]:
        return {
            "epoch_s": s.epoch_s,
            "fits": s.fits,
            "micro_batches": s.micro_batches,
            "stages": [
                {
                    "mcu": u.mcu,
                    "layers": list(u.layers),
                    "sram_bytes": u.sram_bytes,
                    "sram_capacity": u.sram_capacity,
                    "flash_bytes": u.flash_bytes,
                    "flash_capacity": u.flash_capacity,
                    "fits": u.fits,
                }
                for u in s.stages
            ],
        }

    return [
        {
            "mcus": list(c.mcus),
            "best": None if c.best is None else split(c.best),
            "splits": [split(s) for s in c.splits],
        }
        for c in configurations
    ]
