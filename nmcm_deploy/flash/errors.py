"""What can go wrong putting firmware on a board, as typed errors that name the node."""

from __future__ import annotations

from nmcm_deploy.errors import DeployError

INSTALL_HINT = "install pyOCD with: pip install 'nmcm-deploy[hardware]'"


class PyocdMissing(DeployError):
    """pyOCD is an optional dependency and is not installed."""

    def __init__(self) -> None:
        super().__init__("pyOCD is not installed", hint=INSTALL_HINT)


class FlashError(DeployError):
    """Flashing one node failed; ``node`` says which."""

    def __init__(self, node: str, what: str, *, hint: str | None = None) -> None:
        super().__init__(f"node {node!r}: {what}", hint=hint)
        self.node = node
        self.what = what
        self.flash_touched = False  # True once erasing/programming began: the board changed


class PackMissing(FlashError):
    """No CMSIS pack for the node's MCU on this machine (nmcm never downloads one)."""


class ProbeNotFound(FlashError):
    """No connected probe has the node's unique ID."""


class ProbeAmbiguous(FlashError):
    """The node's UID is not one probe's full unique ID: several match, or it is only a part."""


class TargetConnectFailed(FlashError):
    """The probe was found but pyOCD could not connect to the MCU behind it."""


class FlashAlgoFailed(FlashError):
    """Erasing or programming the flash failed (the pack's flash algorithm reported an error)."""


class VerifyMismatch(FlashError):
    """The flash read back differs from the image."""

    def __init__(self, node: str, address: int, expected: int, found: int | None) -> None:
        got = "nothing" if found is None else f"0x{found:02x}"
        super().__init__(
            node,
            f"flash verify mismatch at address 0x{address:08x}: wrote 0x{expected:02x}, "
            f"read back {got}",
            hint="a pack with the wrong sector layout or a write-protected sector; see "
            "docs/bring-up.md, 'flash verify mismatch'",
        )
        self.address = address
        self.expected = expected
        self.found = found


class NodeSilent(FlashError):
    """Flashed and reset, but the node did not answer on the network in time."""
