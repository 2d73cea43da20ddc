"""Exact memory plan of one stage: every buffer as (size, first use, last use), placed in one arena.

The C++ executor does not plan anything: it reads the offsets computed here from the blob's buffer
table (docs/blob-format.md), so the figure printed by `nmcm export` is the arena the node allocates.

Time steps for one micro-batch in a stage of L layers (used for the transient buffers only):
  forward of layer i ........ step i            (0 .. L-1)
  loss / gradient arrives ... step L
  backward of layer i ....... step 2L - i       (L+1 .. 2L)
  gradient sent upstream .... step 2L + 1
Transient buffers of different micro-batches never coexist (one layer runs at a time), so they
share one region. Buffers that must survive between a micro-batch's forward and its backward are
stashed: one copy per in-flight micro-batch (slot), never reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from nmcm_deploy.compiler.ir import Layer, LayerKind, ModelIR, numel

ALIGN = 16
FOREVER = 0xFFFF
SHARED_SLOT = 0xFF  # slot value of a transient buffer shared by all micro-batches


class BufferKind(IntEnum):
    """Buffer kinds; the numbers are the blob's buffer-table codes."""

    PARAM = 1
    GRAD = 2
    MOMENTUM = 3
    ACT = 4  # index i: a_i, the input of layer i of the stage (a_L is the stage output)
    ACT_GRAD = 5  # index i: gradient with respect to a_i
    LABELS = 6  # int32 class ids of one micro-batch, last stage only


@dataclass(frozen=True)
class Buffer:
    kind: BufferKind
    index: int
    slot: int
    bytes: int
    first: int
    last: int
    offset: int = -1

    @property
    def transient(self) -> bool:
        return self.last != FOREVER


@dataclass(frozen=True)
class TensorInfo:
    """A parameter tensor of the stage: which layer (position within the stage), role, shape."""

    layer: int
    role: str  # "weight" | "bias"
    shape: tuple[int, ...]

    @property
    def count(self) -> int:
        return numel(self.shape)


@dataclass(frozen=True)
class MemoryPlan:
    stage_index: int
    stage_count: int
    first_layer: int
    last_layer: int
    micro_batch: int
    slots: int
    momentum: bool
    tensors: tuple[TensorInfo, ...]
    buffers: tuple[Buffer, ...]
    arena_bytes: int

    @property
    def parameters(self) -> int:
        return sum(t.count for t in self.tensors)

    def total(self, *kinds: BufferKind) -> int:
        """Bytes held by buffers of these kinds (aliases counted once)."""
        seen: set[tuple[int, int]] = set()
        total = 0
        for b in self.buffers:
            if b.kind in kinds and (b.offset, b.bytes) not in seen:
                seen.add((b.offset, b.bytes))
                total += _round(b.bytes)
        return total

    def breakdown(self) -> dict[str, int]:
        """Arena bytes by purpose; the parts add up to ``arena_bytes``."""
        transient = [b for b in self.buffers if b.transient]
        start = min((b.offset for b in transient), default=self.arena_bytes)
        stashed = {
            b.offset: _round(b.bytes)
            for b in self.buffers
            if not b.transient and b.kind in (BufferKind.ACT, BufferKind.LABELS)
        }
        return {
            "parameters": self.total(BufferKind.PARAM),
            "gradients": self.total(BufferKind.GRAD),
            "optimizer": self.total(BufferKind.MOMENTUM),
            "stashed_activations": sum(stashed.values()),
            "transient": self.arena_bytes - start,
        }

    def find(self, kind: BufferKind, index: int, slot: int = 0) -> Buffer:
        for b in self.buffers:
            if b.kind is kind and b.index == index and b.slot in (slot, SHARED_SLOT):
                return b
        raise KeyError((kind, index, slot))


def _round(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def stage_tensors(layers: tuple[Layer, ...]) -> tuple[TensorInfo, ...]:
    out: list[TensorInfo] = []
    for pos, layer in enumerate(layers):
        if layer.weight_shape is not None:
            out.append(TensorInfo(pos, "weight", layer.weight_shape))
        if layer.bias_shape is not None:
            out.append(TensorInfo(pos, "bias", layer.bias_shape))
    return tuple(out)


def _needs_input(kind: LayerKind) -> bool:
    return kind in (LayerKind.LINEAR, LayerKind.CONV2D, LayerKind.MAXPOOL2D)


def _needs_output(kind: LayerKind) -> bool:
    return kind in (LayerKind.RELU, LayerKind.SOFTMAX)


def alias_groups(layers: tuple[Layer, ...]) -> list[list[int]]:
    """Activation indices 0..L grouped by storage: a flatten's output is its input."""
    groups: list[list[int]] = [[0]]
    for i, layer in enumerate(layers):
        if layer.kind is LayerKind.FLATTEN:
            groups[-1].append(i + 1)
        else:
            groups.append([i + 1])
    return groups


def plan_stage(
    ir: ModelIR,
    first: int,
    last: int,
    *,
    micro_batch: int,
    slots: int,
    momentum: bool,
    stage_index: int,
    stage_count: int,
) -> MemoryPlan:
    """Plan the arena of the stage running layers ``first..last`` (inclusive) of ``ir``."""
    layers = ir.layers[first : last + 1]
    n_layers = len(layers)
    tensors = stage_tensors(layers)
    is_first = stage_index == 0
    is_last = stage_index == stage_count - 1
    act_shapes = [layers[0].in_shape] + [ly.out_shape for ly in layers]
    act_bytes = [4 * micro_batch * numel(s) for s in act_shapes]

    buffers: list[Buffer] = []
    aliases: dict[int, int] = {}  # buffer position -> position whose storage it shares

    def add(buffer: Buffer, alias_of: int | None = None) -> int:
        buffers.append(buffer)
        if alias_of is not None:
            aliases[len(buffers) - 1] = alias_of
        return len(buffers) - 1

    for t_index, t in enumerate(tensors):
        size = 4 * t.count
        add(Buffer(BufferKind.PARAM, t_index, 0, size, 0, FOREVER))
        add(Buffer(BufferKind.GRAD, t_index, 0, size, 0, FOREVER))
        if momentum:
            add(Buffer(BufferKind.MOMENTUM, t_index, 0, size, 0, FOREVER))

    # Activations: a group is stashed if backward needs any member, or if it is a link buffer
    # (the stage input a_0 is where frames from upstream land; a_L is what goes downstream / into
    # the loss).
    groups = alias_groups(layers)
    for group in groups:
        stashed = False
        for i in group:
            if i in (0, n_layers):
                stashed = True
            if i < n_layers and _needs_input(layers[i].kind):
                stashed = True
            if i > 0 and _needs_output(layers[i - 1].kind):
                stashed = True
        size = act_bytes[group[0]]
        slot_ids = list(range(slots)) if stashed else [SHARED_SLOT]
        # A transient group is produced by layer group[0]-1 and last read by layer group[-1].
        first_use, last_use = (0, FOREVER) if stashed else (group[0] - 1, group[-1])
        for slot in slot_ids:
            head = add(Buffer(BufferKind.ACT, group[0], slot, size, first_use, last_use))
            for i in group[1:]:
                add(Buffer(BufferKind.ACT, i, slot, size, first_use, last_use), head)

    if is_last:
        for slot in range(slots):
            add(Buffer(BufferKind.LABELS, 0, slot, 4 * micro_batch, 0, FOREVER))

    # Gradients with respect to activations: g_L arrives at step L; g_i (i < L) is written by the
    # backward of layer i (step 2L - i) and read by the backward of layer i-1 or sent upstream.
    # The first stage never computes g_0 (nor anything aliased to it), unless that storage is
    # also the stage output of a stage with a downstream neighbour (a first stage of flattens
    # only): GRADIENTS from downstream land there.
    for group in groups:
        if group[0] == 0 and is_first and not (group[-1] == n_layers and not is_last):
            continue
        produced = n_layers if group[-1] == n_layers else 2 * n_layers - group[-1]
        consumed = 2 * n_layers - group[0] + 1
        size = act_bytes[group[0]]
        head = add(Buffer(BufferKind.ACT_GRAD, group[0], SHARED_SLOT, size, produced, consumed))
        for i in group[1:]:
            add(Buffer(BufferKind.ACT_GRAD, i, SHARED_SLOT, size, produced, consumed), head)

    placed = _place(buffers, aliases)
    arena = max((b.offset + _round(b.bytes) for b in placed), default=0)
    return MemoryPlan(
        stage_index=stage_index,
        stage_count=stage_count,
        first_layer=first,
        last_layer=last,
        micro_batch=micro_batch,
        slots=slots,
        momentum=momentum,
        tensors=tensors,
        buffers=tuple(placed),
        arena_bytes=arena,
    )


def _place(buffers: list[Buffer], aliases: dict[int, int]) -> list[Buffer]:
    """Permanent buffers back to back; transient ones greedily (largest first, lowest fit),
    as TFLite Micro's greedy planner does. Aliases take their target's offset."""
    offsets: dict[int, int] = {}
    cursor = 0
    for pos, b in enumerate(buffers):
        if pos not in aliases and not b.transient:
            offsets[pos] = cursor
            cursor += _round(b.bytes)
    base = cursor

    transient = [pos for pos, b in enumerate(buffers) if b.transient and pos not in aliases]
    transient.sort(key=lambda pos: (-buffers[pos].bytes, pos))
    placed: list[tuple[int, int, Buffer]] = []  # (offset, rounded size, buffer)
    for pos in transient:
        b = buffers[pos]
        size = _round(b.bytes)
        live = sorted(
            (off, sz) for off, sz, o in placed if not (o.last < b.first or b.last < o.first)
        )
        offset = base
        for off, sz in live:
            if offset + size <= off:
                break
            offset = max(offset, off + sz)
        placed.append((offset, size, b))
        offsets[pos] = offset

    for pos, target in aliases.items():
        offsets[pos] = offsets[target]
    return [
        Buffer(b.kind, b.index, b.slot, b.bytes, b.first, b.last, offsets[pos])
        for pos, b in enumerate(buffers)
    ]
