"""Check that each stage fits its MCU: the arena in SRAM and the blob in flash, each with what the
firmware itself needs. The figures come from compiler/fit.py, the planner's own formula, so
`validate` predicts exactly what `export` plans."""

from __future__ import annotations

from nmcm_deploy import profiles
from nmcm_deploy.compiler.fit import keeps_momentum, stage_fit
from nmcm_deploy.compiler.ir import ModelIR
from nmcm_deploy.manifest.checks.context import (
    Context,
    Where,
    as_dict,
    as_int,
    as_number,
    layer_span,
)
from nmcm_deploy.manifest.model import (
    DEFAULT_MICRO_BATCHES,
    DEFAULT_MOMENTUM,
    DEFAULT_SCHEDULE,
    DEFAULT_STAGES,
)


def check_fit(ctx: Context, ir: ModelIR) -> None:
    """Each stage's memory plan fits its MCU: the arena in SRAM, the blob in flash, each with what
    the firmware itself needs (the profile's runtime reserve)."""
    if not ctx.clean("spec", "training"):
        return
    training = as_dict(ctx.spec.get("training"))
    batch = as_int(training.get("batch_size"))
    if training.get("micro_batches") == "auto":
        return  # some count must fit: the planner tries them once the rest is sound (content.py)
    micro = as_int(training.get("micro_batches")) or DEFAULT_MICRO_BATCHES
    if batch is None or micro > batch:
        return
    momentum = as_number(as_dict(training.get("optimizer")).get("momentum")) or DEFAULT_MOMENTUM
    schedule = str(training.get("schedule", DEFAULT_SCHEDULE))
    node_mcu = {
        str(node.get("name")): (i, str(node.get("mcu")))
        for i, node in ctx.nodes()
        if ctx.clean("spec", "nodes", i, "name") and ctx.clean("spec", "nodes", i, "mcu")
    }

    stages = ctx.spec.get("stages", DEFAULT_STAGES)
    spans: list[tuple[Where, str, int, int]] = []
    if isinstance(stages, list):
        for i, stage in enumerate(stages):
            first, last = as_dict(stage)["layers"]
            spans.append((("spec", "stages", i), str(as_dict(stage)["node"]), first, last))
    elif len(node_mcu) == 1:  # "auto" on one node can only mean the whole model there
        name, (index, _) = next(iter(node_mcu.items()))
        spans.append((("spec", "nodes", index), name, 0, len(ir.layers) - 1))

    for stage_index, (where, node, first, last) in enumerate(spans):
        mcu_name = node_mcu.get(node, (0, ""))[1]
        if mcu_name not in profiles.mcu_names():
            continue
        mcu = profiles.mcu(mcu_name)
        fit = stage_fit(
            ir,
            first,
            last,
            mcu,
            batch_size=batch,
            micro_batches=micro,
            momentum=keeps_momentum(momentum),
            schedule=schedule,
            stage_index=stage_index,
            stage_count=len(spans),
        )
        what = f"stage {stage_index} ({layer_span(first, last)}) on node {node!r} ({mcu.name})"
        if fit.sram_bytes > mcu.sram_capacity:
            parts = f"arena {fit.arena_bytes:,}"
            if mcu.runtime_sram_reserve:
                parts += f" + runtime {mcu.runtime_sram_reserve:,}"
            ctx.add(
                where,
                f"{what} needs {fit.sram_bytes:,} bytes of SRAM ({parts}) but has "
                f"{mcu.sram_capacity:,} in {mcu.arena_region}: "
                f"{fit.sram_bytes - mcu.sram_capacity:,} bytes too many",
            )
        if fit.flash_bytes > mcu.flash_capacity:
            ctx.add(
                where,
                f"{what} needs {fit.flash_bytes:,} bytes of flash (blob {fit.blob_bytes:,} + "
                f"firmware {mcu.runtime_flash_reserve:,}) but has {mcu.flash_capacity:,}: "
                f"{fit.flash_bytes - mcu.flash_capacity:,} bytes too many",
            )
