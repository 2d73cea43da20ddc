"""Writer and reader of stage blobs. The format is specified in docs/blob-format.md."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from nmcm_deploy.compiler.blob_layout import (
    ALIGN,
    BUFFER,
    CRC,
    FORMAT_VERSION,
    HEADER,
    LAYER,
    MAGIC,
    TENSOR,
    align,
)
from nmcm_deploy.compiler.ir import Layer, LayerKind
from nmcm_deploy.compiler.memory import Buffer, BufferKind, MemoryPlan, TensorInfo
from nmcm_deploy.errors import BlobError

FLAG_FIRST = 1
FLAG_LAST = 2
FLAG_MOMENTUM = 4


def _pad3(shape: tuple[int, ...]) -> tuple[int, int, int]:
    dims = (*shape, 1, 1, 1)
    return (dims[0], dims[1], dims[2])


@dataclass(frozen=True)
class StageBlob:
    """A decoded blob: the stage's layers, plan and weights (tensor order of the tensor table)."""

    stage_index: int
    stage_count: int
    model_hash: bytes
    layers: tuple[Layer, ...]
    model_indices: tuple[int, ...]
    plan: MemoryPlan
    weights: tuple[np.ndarray, ...]

    @property
    def flags(self) -> int:
        flags = 0
        if self.stage_index == 0:
            flags |= FLAG_FIRST
        if self.stage_index == self.stage_count - 1:
            flags |= FLAG_LAST
        if self.plan.momentum:
            flags |= FLAG_MOMENTUM
        return flags


def write_blob(
    layers: tuple[Layer, ...],
    model_indices: tuple[int, ...],
    plan: MemoryPlan,
    weights: list[np.ndarray],
    model_hash: bytes,
) -> bytes:
    """Serialise one stage. ``weights`` follow ``plan.tensors`` in order."""
    if len(weights) != len(plan.tensors):
        raise BlobError(f"{len(plan.tensors)} tensors planned but {len(weights)} given")
    tensor_index: dict[tuple[int, str], int] = {
        (t.layer, t.role): i for i, t in enumerate(plan.tensors)
    }
    layer_table = bytearray()
    for pos, (layer, model_index) in enumerate(zip(layers, model_indices, strict=True)):
        layer_table += LAYER.pack(
            int(layer.kind),
            1 if layer.bias_shape is not None else 0,
            len(layer.in_shape),
            len(layer.out_shape),
            model_index,
            0,
            *_pad3(layer.in_shape),
            *_pad3(layer.out_shape),
            *layer.kernel,
            *layer.stride,
            *layer.padding,
            tensor_index.get((pos, "weight"), -1),
            tensor_index.get((pos, "bias"), -1),
        )

    data = bytearray()
    tensor_table = bytearray()
    for t, w in zip(plan.tensors, weights, strict=True):
        arr = np.ascontiguousarray(w, dtype="<f4")
        if tuple(arr.shape) != t.shape:
            raise BlobError(f"tensor for layer {t.layer} {t.role}: shape {arr.shape} != {t.shape}")
        dims = (*t.shape, 1, 1, 1, 1)[:4]
        tensor_table += TENSOR.pack(
            len(data), t.count, t.layer, 0 if t.role == "weight" else 1, len(t.shape), *dims, 0
        )
        data += arr.tobytes()
        data += bytes(align(len(data)) - len(data))

    buffer_table = bytearray()
    for b in plan.buffers:
        buffer_table += BUFFER.pack(
            b.offset, b.bytes, int(b.kind), b.slot, b.index, b.first, b.last
        )

    layer_off = HEADER.size
    tensor_off = layer_off + len(layer_table)
    buffer_off = tensor_off + len(tensor_table)
    data_off = align(buffer_off + len(buffer_table))
    total = data_off + len(data) + CRC.size
    flags = (
        (FLAG_FIRST if plan.stage_index == 0 else 0)
        | (FLAG_LAST if plan.stage_index == plan.stage_count - 1 else 0)
        | (FLAG_MOMENTUM if plan.momentum else 0)
    )
    header = HEADER.pack(
        MAGIC,
        FORMAT_VERSION,
        HEADER.size,
        total,
        plan.stage_index,
        plan.stage_count,
        len(layers),
        len(plan.tensors),
        len(plan.buffers),
        flags,
        plan.micro_batch,
        plan.slots,
        plan.arena_bytes,
        layer_off,
        tensor_off,
        buffer_off,
        data_off,
        model_hash,
    )
    body = header + layer_table + tensor_table + buffer_table
    body += bytes(data_off - len(body)) + data
    return bytes(body) + CRC.pack(zlib.crc32(body) & 0xFFFFFFFF)


def read_blob(blob: bytes) -> StageBlob:
    """Decode and check a blob; raises BlobError on anything malformed."""
    if len(blob) < HEADER.size + CRC.size:
        raise BlobError(f"blob is {len(blob)} bytes, shorter than a header")
    (
        magic,
        version,
        header_size,
        total,
        stage_index,
        stage_count,
        n_layers,
        n_tensors,
        n_buffers,
        flags,
        micro_batch,
        slots,
        arena,
        layer_off,
        tensor_off,
        buffer_off,
        data_off,
        model_hash,
    ) = HEADER.unpack_from(blob, 0)
    if magic != MAGIC:
        raise BlobError(f"not a stage blob (magic {magic!r}, expected {MAGIC!r})")
    if version != FORMAT_VERSION:
        raise BlobError(
            f"blob format version {version} is not supported (this reads {FORMAT_VERSION})"
        )
    if header_size != HEADER.size:
        raise BlobError(f"header size {header_size} != {HEADER.size}")
    if total != len(blob):
        raise BlobError(f"blob says it is {total} bytes but {len(blob)} were given")
    (crc,) = CRC.unpack_from(blob, total - CRC.size)
    if zlib.crc32(blob[: total - CRC.size]) & 0xFFFFFFFF != crc:
        raise BlobError("CRC mismatch: the blob is corrupt")
    if not (
        layer_off == HEADER.size
        and tensor_off == layer_off + n_layers * LAYER.size
        and buffer_off == tensor_off + n_tensors * TENSOR.size
        and data_off == align(buffer_off + n_buffers * BUFFER.size)
        and data_off <= total - CRC.size
    ):
        raise BlobError("table offsets are inconsistent with their counts")
    if stage_count == 0 or stage_index >= stage_count or n_layers == 0:
        raise BlobError(f"stage {stage_index} of {stage_count} with {n_layers} layers is invalid")

    layers: list[Layer] = []
    indices: list[int] = []
    refs: list[tuple[int, int]] = []
    for i in range(n_layers):
        f = LAYER.unpack_from(blob, layer_off + i * LAYER.size)
        kind_code, lflags, in_rank, out_rank, model_index = f[0], f[1], f[2], f[3], f[4]
        try:
            kind = LayerKind(kind_code)
        except ValueError:
            raise BlobError(f"layer {i}: unknown kind {kind_code}") from None
        if in_rank not in (1, 3) or out_rank not in (1, 3):
            raise BlobError(f"layer {i}: bad rank")
        in_shape = tuple(f[6 : 6 + in_rank])
        out_shape = tuple(f[9 : 9 + out_rank])
        k, s, p = (f[12], f[13]), (f[14], f[15]), (f[16], f[17])
        layers.append(Layer(kind, in_shape, out_shape, k, s, p, bias=bool(lflags & 1)))
        indices.append(model_index)
        refs.append((f[18], f[19]))

    tensors: list[TensorInfo] = []
    weights: list[np.ndarray] = []
    data_size = total - CRC.size - data_off
    for i in range(n_tensors):
        off, count, layer, role, rank, d0, d1, d2, d3, _ = TENSOR.unpack_from(
            blob, tensor_off + i * TENSOR.size
        )
        if not 1 <= rank <= 4 or layer >= n_layers or role > 1:
            raise BlobError(f"tensor {i}: bad record")
        shape = (d0, d1, d2, d3)[:rank]
        if off % ALIGN or off + 4 * count > data_size or int(np.prod(shape)) != count:
            raise BlobError(f"tensor {i}: out of range or inconsistent")
        start = data_off + off
        arr = np.frombuffer(blob, dtype="<f4", count=count, offset=start).reshape(shape)
        tensors.append(TensorInfo(layer, "weight" if role == 0 else "bias", shape))
        weights.append(arr.astype(np.float32))

    buffers = []
    for i in range(n_buffers):
        off, size, kind_code, slot, index, first, last = BUFFER.unpack_from(
            blob, buffer_off + i * BUFFER.size
        )
        try:
            bkind = BufferKind(kind_code)
        except ValueError:
            raise BlobError(f"buffer {i}: unknown kind {kind_code}") from None
        if off + size > arena:
            raise BlobError(f"buffer {i} ends past the arena")
        buffers.append(Buffer(bkind, index, slot, size, first, last, off))

    plan = MemoryPlan(
        stage_index=stage_index,
        stage_count=stage_count,
        first_layer=indices[0],
        last_layer=indices[-1],
        micro_batch=micro_batch,
        slots=slots,
        momentum=bool(flags & FLAG_MOMENTUM),
        tensors=tuple(tensors),
        buffers=tuple(buffers),
        arena_bytes=arena,
    )
    return StageBlob(
        stage_index, stage_count, model_hash, tuple(layers), tuple(indices), plan, tuple(weights)
    )
