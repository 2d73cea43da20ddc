"""Stage sizing: how big a stage's micro-batch, arena and blob are, and whether they fit its MCU.

The one formula for both the planner (compiler/cluster.py's ``plan_cluster``, what `export`,
`build` and `apply` use) and `validate` (manifest/checks/fit.py), so the two always agree. Pure:
no torch, no numpy, no I/O. The build later replaces the prediction with the ELF's figures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from nmcm_deploy.compiler.blob_layout import blob_size
from nmcm_deploy.compiler.ir import ModelIR
from nmcm_deploy.compiler.memory import MemoryPlan, plan_stage
from nmcm_deploy.profiles import McuProfile


def micro_batch_size(batch_size: int, micro_batches: int) -> int:
    """Most samples in one micro-batch of a batch split ``micro_batches`` ways."""
    return math.ceil(batch_size / micro_batches)


def stage_slots(schedule: str, micro_batches: int) -> int:
    """Micro-batches a stage plans room for (stashed activations): every micro-batch of a batch,
    whatever the schedule. (A sequential schedule could do with one; a 1F1B one with the stages
    downstream.)"""
    del schedule
    return micro_batches


def keeps_momentum(momentum: float) -> bool:
    """Whether the optimizer keeps a momentum buffer per parameter tensor."""
    return momentum > 0


@dataclass(frozen=True)
class StageFit:
    """A stage's memory plan and blob size against its MCU: what the stage needs of the MCU
    (arena and blob plus what the firmware itself takes, the profile's reserves) and what the
    MCU has."""

    memory: MemoryPlan
    blob_bytes: int
    mcu: McuProfile

    @property
    def arena_bytes(self) -> int:
        return self.memory.arena_bytes

    @property
    def sram_bytes(self) -> int:
        return self.memory.arena_bytes + self.mcu.runtime_sram_reserve

    @property
    def sram_capacity(self) -> int:
        return self.mcu.sram_capacity

    @property
    def flash_bytes(self) -> int:
        return self.blob_bytes + self.mcu.runtime_flash_reserve

    @property
    def flash_capacity(self) -> int:
        return self.mcu.flash_capacity

    @property
    def fits(self) -> bool:
        return self.sram_bytes <= self.sram_capacity and self.flash_bytes <= self.flash_capacity

    def shortfall(self) -> str:
        parts = []
        if self.sram_bytes > self.sram_capacity:
            parts.append(
                f"SRAM {self.sram_bytes} B > {self.sram_capacity} B "
                f"(over by {self.sram_bytes - self.sram_capacity} B)"
            )
        if self.flash_bytes > self.flash_capacity:
            parts.append(
                f"flash {self.flash_bytes} B > {self.flash_capacity} B "
                f"(over by {self.flash_bytes - self.flash_capacity} B)"
            )
        return "; ".join(parts)


def stage_fit(
    ir: ModelIR,
    first: int,
    last: int,
    mcu: McuProfile,
    *,
    batch_size: int,
    micro_batches: int,
    momentum: bool,
    schedule: str,
    stage_index: int,
    stage_count: int,
) -> StageFit:
    """Plan the memory of the stage running layers ``first..last`` (inclusive) of ``ir`` on
    ``mcu`` and size its blob (docs/blob-format.md) without building it."""
    memory = plan_stage(
        ir,
        first,
        last,
        micro_batch=micro_batch_size(batch_size, micro_batches),
        slots=stage_slots(schedule, micro_batches),
        momentum=momentum,
        stage_index=stage_index,
        stage_count=stage_count,
    )
    return StageFit(memory, blob_size(memory, last - first + 1), mcu)
