"""The memory plan against a hand count, and its invariants on random models."""

from __future__ import annotations

import random

import pytest

from nmcm_deploy.compiler.inline import inline_ir
from nmcm_deploy.compiler.memory import SHARED_SLOT, BufferKind, MemoryPlan, plan_stage
from tests.test_compiler_ir import random_spec

DIGITS_CNN = [
    {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool2d", "kernel_size": 2},
    {"type": "flatten"},
    {"type": "linear", "out_features": 10},
    {"type": "softmax"},
]


def test_digits_cnn_single_stage_hand_count() -> None:
    ir = inline_ir([1, 8, 8], DIGITS_CNN)
    plan = plan_stage(
        ir, 0, 5, micro_batch=16, slots=1, momentum=True, stage_index=0, stage_count=1
    )
    # Parameters: conv 8*1*3*3 = 72 floats (288 B), bias 8 (32 B), linear 10*128 (5120 B),
    # bias 10 (40 B, rounded to 48). Gradients and momentum the same again.
    assert plan.parameters == 72 + 8 + 1280 + 10
    assert plan.breakdown()["parameters"] == 288 + 32 + 5120 + 48
    assert plan.breakdown()["gradients"] == 5488
    assert plan.breakdown()["optimizer"] == 5488
    # Stashed for backward, 16 samples: the stage input (conv needs it) 64 floats, the ReLU
    # output (ReLU and maxpool need it) 512, the pooled/flattened activation (linear needs it)
    # 128, the softmax output 10 (softmax backward / loss), and 16 int32 labels.
    assert plan.breakdown()["stashed_activations"] == 16 * 4 * (64 + 512 + 128 + 10) + 64
    # Transient peak: during the backward of the ReLU, its input gradient (512 floats) and its
    # output gradient (512 floats) are both live: 2 * 16 * 512 * 4 bytes.
    assert plan.breakdown()["transient"] == 2 * 16 * 512 * 4
    assert plan.arena_bytes == 3 * 5488 + 45760 + 65536
    assert sum(plan.breakdown().values()) == plan.arena_bytes


def test_first_stage_has_no_input_gradient_and_later_stages_do() -> None:
    ir = inline_ir([1, 8, 8], DIGITS_CNN)
    first = plan_stage(
        ir, 0, 3, micro_batch=4, slots=2, momentum=False, stage_index=0, stage_count=2
    )
    last = plan_stage(
        ir, 4, 5, micro_batch=4, slots=2, momentum=False, stage_index=1, stage_count=2
    )
    assert not [b for b in first.buffers if b.kind is BufferKind.ACT_GRAD and b.index == 0]
    assert [b for b in last.buffers if b.kind is BufferKind.ACT_GRAD and b.index == 0]
    assert not [b for b in first.buffers if b.kind is BufferKind.LABELS]
    assert len([b for b in last.buffers if b.kind is BufferKind.LABELS]) == 2
    assert not [b for b in first.buffers if b.kind is BufferKind.MOMENTUM]
    # The flatten output (activation 4 of stage 0) is its input's storage, in every slot.
    for slot in (0, 1):
        assert (
            first.find(BufferKind.ACT, 3, slot).offset == first.find(BufferKind.ACT, 4, slot).offset
        )


def _check_invariants(plan: MemoryPlan) -> None:
    for b in plan.buffers:
        assert b.offset % 16 == 0
        assert b.offset + b.bytes <= plan.arena_bytes
    # No two distinct storages that are live at the same time share a byte.
    storages = {(b.offset, b.bytes, b.first, b.last) for b in plan.buffers}
    items = sorted(storages)
    for i, (off_a, size_a, first_a, last_a) in enumerate(items):
        for off_b, size_b, first_b, last_b in items[i + 1 :]:
            if (off_a, size_a) == (off_b, size_b):
                continue
            live_together = not (last_a < first_b or last_b < first_a)
            if live_together:
                assert off_a + size_a <= off_b or off_b + size_b <= off_a


@pytest.mark.parametrize("seed", range(30))
def test_random_plans_never_overlap_live_buffers(seed: int) -> None:
    rng = random.Random(seed)
    input_shape, layers = random_spec(rng)
    ir = inline_ir(input_shape, layers)
    n = len(ir.layers)
    cut = rng.randint(0, n - 1)
    stages = [(0, cut), (cut + 1, n - 1)] if cut < n - 1 else [(0, n - 1)]
    for index, (first, last) in enumerate(stages):
        slots = rng.randint(1, 4)
        plan = plan_stage(
            ir,
            first,
            last,
            micro_batch=rng.randint(1, 8),
            slots=slots,
            momentum=rng.random() < 0.5,
            stage_index=index,
            stage_count=len(stages),
        )
        _check_invariants(plan)
        stashed = [b for b in plan.buffers if b.kind is BufferKind.ACT and b.slot != SHARED_SLOT]
        assert {b.slot for b in stashed} == set(range(slots))
        # The stage's input and output are link buffers: always stashed per slot.
        for i in (0, last - first + 1):
            assert plan.find(BufferKind.ACT, i, slots - 1).slot == slots - 1
