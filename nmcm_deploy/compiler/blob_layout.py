"""The byte layout of a stage blob (docs/blob-format.md): record structs and the blob's size.

Kept apart from the writer and reader (blob.py, which need numpy) so that `validate` and `status`
can size a blob without importing numpy.
"""

from __future__ import annotations

import struct

from nmcm_deploy.compiler.memory import MemoryPlan

MAGIC = b"NMCB"
FORMAT_VERSION = 1
HEADER = struct.Struct("<4sHHIHHHHHHHHIIIII16s")
LAYER = struct.Struct("<BBBBHH3I3I6Hhh")
TENSOR = struct.Struct("<IIHBB4II")
BUFFER = struct.Struct("<IIBBHHH")
CRC = struct.Struct("<I")
ALIGN = 16

assert HEADER.size == 64 and LAYER.size == 48 and TENSOR.size == 32 and BUFFER.size == 16


def align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


def blob_size(plan: MemoryPlan, layer_count: int) -> int:
    """Bytes of the stage's blob, exactly as write_blob will lay it out."""
    tables = (
        HEADER.size
        + LAYER.size * layer_count
        + TENSOR.size * len(plan.tensors)
        + BUFFER.size * len(plan.buffers)
    )
    return align(tables) + sum(align(4 * t.count) for t in plan.tensors) + CRC.size
