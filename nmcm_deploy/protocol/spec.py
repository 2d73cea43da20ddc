"""Constants and enumerations of the wire protocol, version 1 (docs/protocol.md).

The numbers here are the format: a change to any of them is a new protocol version, new test vectors
(tests/vectors/protocol/) and the same change in firmware/net/include/nmcm/net/protocol.h.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag

MAGIC = b"NMCP"
VERSION = 1
HEADER_SIZE = 28  # fields (24) + header CRC (4)
CRC_SIZE = 4
MIN_PAYLOAD_LIMIT = 512  # every receiver takes at least this: fixed-only messages and ERROR fit
MAX_ERROR_TEXT = 200
CLUSTER_FIELD_SIZE = 64  # char[64], NUL-padded: a DNS label (<= 63) and its NUL
HASH_SIZE = 16
OBSERVER_STAGE = 0xFFFF


class MessageType(IntEnum):
    HELLO = 0x01
    HELLO_ACK = 0x02
    ERROR = 0x03
    ACK = 0x04
    SHUTDOWN = 0x05
    STATUS_REQUEST = 0x06
    STATUS = 0x07
    BATCH_BEGIN = 0x10
    INPUTS = 0x11
    LABELS = 0x12
    ACTIVATIONS = 0x13
    GRADIENTS = 0x14
    METRICS = 0x15
    STEP = 0x16
    GET_WEIGHTS = 0x20
    WEIGHTS = 0x21
    SET_WEIGHTS = 0x22


class Flags(IntFlag):
    NONE = 0
    EVAL = 1  # the frame belongs to a forward-only evaluation batch


KNOWN_FLAGS = int(Flags.EVAL)


class ErrorCode(IntEnum):
    """ERROR codes; also the kind of every decode failure (ProtocolError.code)."""

    NONE = 0  # not an error: used only by errors that never go on the wire (ConnectionClosed)
    BAD_MAGIC = 1
    BAD_VERSION = 2
    BAD_HEADER = 3
    UNKNOWN_TYPE = 4
    TOO_LARGE = 5
    MALFORMED = 6
    BAD_CRC = 7
    SEQUENCE = 8
    TRUNCATED = 9
    TIMEOUT = 10
    UNEXPECTED = 11
    CLUSTER_MISMATCH = 12
    MODEL_MISMATCH = 13
    STAGE_MISMATCH = 14
    BUSY = 15
    INTERNAL = 16
    NON_FINITE = 17


class Role(IntEnum):
    COORDINATOR = 1
    UPSTREAM = 2  # the upstream neighbour stage, on the connection it opened
    NODE = 3  # a node answering in HELLO_ACK
    OBSERVER = 4  # a status probe: STATUS_REQUEST and SHUTDOWN only


class Mode(IntEnum):
    TRAIN = 0
    EVAL = 1


class LossKind(IntEnum):
    """As nmcm::LossKind in firmware/core/include/nmcm/loss.h."""

    CROSS_ENTROPY = 0
    MSE = 1


class TensorKind(IntEnum):
    PARAMETER = 0
    MOMENTUM = 1
    GRADIENT = 2  # read-only: GET_WEIGHTS / WEIGHTS


class NodeState(IntEnum):
    IDLE = 0
    TRAINING = 1
    EVALUATING = 2
    FAILED = 3


# Size of each type's fixed part, and whether a data part may follow it.
FIXED_SIZE: dict[MessageType, int] = {
    MessageType.HELLO: 128,
    MessageType.HELLO_ACK: 128,
    MessageType.ERROR: 8,
    MessageType.ACK: 8,
    MessageType.SHUTDOWN: 0,
    MessageType.STATUS_REQUEST: 0,
    MessageType.STATUS: 128,
    MessageType.BATCH_BEGIN: 16,
    MessageType.INPUTS: 8,
    MessageType.LABELS: 4,
    MessageType.ACTIVATIONS: 8,
    MessageType.GRADIENTS: 8,
    MessageType.METRICS: 16,
    MessageType.STEP: 16,
    MessageType.GET_WEIGHTS: 16,
    MessageType.WEIGHTS: 16,
    MessageType.SET_WEIGHTS: 16,
}

HAS_DATA: frozenset[MessageType] = frozenset(
    {
        MessageType.ERROR,
        MessageType.INPUTS,
        MessageType.LABELS,
        MessageType.ACTIVATIONS,
        MessageType.GRADIENTS,
        MessageType.WEIGHTS,
        MessageType.SET_WEIGHTS,
    }
)

TENSOR_TYPES: frozenset[MessageType] = frozenset(
    {MessageType.INPUTS, MessageType.ACTIVATIONS, MessageType.GRADIENTS}
)


def payload_limit(
    micro_batch: int, input_features: int, output_features: int, *, last: bool
) -> int:
    """Receive limit of a node: the biggest frame its stage takes, and never below 512.

    Every stage takes its input (INPUTS on the first, ACTIVATIONS on the others); all but the last
    take GRADIENTS of their output; the last takes LABELS.
    """
    limit = max(MIN_PAYLOAD_LIMIT, 8 + micro_batch * input_features * 4)
    if last:
        return max(limit, 4 + micro_batch * 4)
    return max(limit, 8 + micro_batch * output_features * 4)
