"""Flashing a cluster's boards, node by node: what `apply --target hardware` does to the hardware.

Every node that changed is flashed through its own probe, verified, reset, and then waited for
until it answers on its W5500 address with the identity the manifest expects. A node that fails
does not stop the others; each node that succeeds is recorded in ``state.json`` at once, so an
interrupted or partly failed apply is continued by the next one. Configuration problems (a pack
missing, a node without a probe UID or a W5500 address) are found for every node before any probe
is touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nmcm_deploy.coordinator.link import HandshakeRefused, Identity, NodeFailed, NodeLink
from nmcm_deploy.errors import DeployError, NmcmError
from nmcm_deploy.flash.errors import FlashError, NodeSilent
from nmcm_deploy.flash.packs import PackEntry, resolve_pack
from nmcm_deploy.flash.pyocd_session import (
    DEFAULT_CONNECT_MODE,
    DEFAULT_FREQUENCY,
    FlashRequest,
    FlashResult,
    flash,
)
from nmcm_deploy.manifest.model import NodeSpec
from nmcm_deploy.profiles import mcu as mcu_profile
from nmcm_deploy.protocol import Role
from nmcm_deploy.reconcile.desired import DesiredNode, recorded_node
from nmcm_deploy.reconcile.state import ClusterState, StateStore

DEFAULT_BOOT_TIMEOUT = 30.0  # s from reset to answering: clocks, W5500 reset, PHY link (~3 s)


@dataclass(frozen=True)
class HardwareNode:
    """One node to put on its board: what to flash, and where and as whom it answers afterwards."""

    spec: NodeSpec
    where: str  # the node in the manifest, e.g. "spec.nodes[0]"
    desired: DesiredNode
    image: Path  # the raw binary programmed at the start of flash
    elf: Path | None  # recorded as the node's image when there is one
    host: str  # the W5500's IP address
    identity: Identity  # what the node must say about itself in HELLO_ACK
    firmware_hash: str = ""  # hex the image reports in STATUS (build key[:32]); "": not checked

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class NodeOutcome:
    node: str
    ok: bool
    probe: str
    detail: str
    seconds: float
    hint: str | None = None


class FlashIncomplete(DeployError):
    """Some nodes could not be flashed or did not come up; the others were, and are recorded."""

    def __init__(self, outcomes: Sequence[NodeOutcome]) -> None:
        failed = [o for o in outcomes if not o.ok]
        super().__init__(
            f"flashing failed on {len(failed)} of {len(outcomes)} node(s):\n"
            + outcome_table(outcomes),
            hint=next((o.hint for o in failed if o.hint), None),
        )
        self.outcomes = tuple(outcomes)


def outcome_table(outcomes: Sequence[NodeOutcome]) -> str:
    """The per-node report as aligned plain text (it ends up in logs and CI output)."""
    rows = [("node", "probe", "result", "time")] + [
        (o.node, o.probe or "-", ("ok: " if o.ok else "FAILED: ") + o.detail, f"{o.seconds:.1f} s")
        for o in outcomes
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(r[:3], widths, strict=True)) + "  " + r[3]
        for r in rows
    )


@dataclass(frozen=True)
class ProbeSettings:
    """How one node's board is reached and which pack describes its MCU, resolved before any
    image is built or any probe is touched."""

    node: str
    uid: str | None  # None: the only connected probe (a single-node cluster may omit it)
    target: str
    pack: Path
    frequency: int
    connect_mode: str

    def request(self, image: Path) -> FlashRequest:
        return FlashRequest(
            node=self.node,
            uid=self.uid,
            target=self.target,
            pack=self.pack,
            image=image,
            frequency=self.frequency,
            connect_mode=self.connect_mode,
        )


def preflight(
    nodes: Sequence[tuple[NodeSpec, str]],
    entries: list[PackEntry] | None = None,
    *,
    several: bool | None = None,
) -> dict[str, ProbeSettings]:
    """Each node's probe settings, from (node, its manifest path) pairs, checked without touching
    a probe: W5500 address, probe UID (needed when the cluster has several boards: ``several``,
    by default when ``nodes`` has more than one), pack file. Raises on any problem, naming every
    node that has one."""
    several = len(nodes) > 1 if several is None else several
    out: dict[str, ProbeSettings] = {}
    problems: list[NmcmError] = []
    for spec, where in nodes:
        try:
            out[spec.name] = _settings(spec, where, several=several, entries=entries)
        except NmcmError as exc:
            problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise DeployError(
            f"{len(problems)} nodes cannot be flashed:\n"
            + "\n".join(f"  - {p.message}" for p in problems),
            hint=next((p.hint for p in problems if p.hint), None),
        )
    return out


def _settings(
    spec: NodeSpec, where: str, *, several: bool, entries: list[PackEntry] | None
) -> ProbeSettings:
    if spec.w5500 is None:
        raise FlashError(spec.name, f"needs {where}.w5500 (ip, mac) on target hardware")
    probe = spec.probe
    if probe is None and several:
        raise FlashError(
            spec.name,
            f"needs {where}.probe.uid: with several boards nmcm must know which is which",
            hint="`nmcm probes` lists the connected probes' unique IDs",
        )
    profile = mcu_profile(spec.mcu)
    pack = resolve_pack(spec, profile, where, entries)
    return ProbeSettings(
        node=spec.name,
        uid=probe.uid if probe is not None else None,
        target=profile.pyocd_target,
        pack=pack.path,
        frequency=probe.frequency if probe and probe.frequency else DEFAULT_FREQUENCY,
        connect_mode=probe.connect_mode if probe and probe.connect_mode else DEFAULT_CONNECT_MODE,
    )


def wait_answering(node: HardwareNode, port: int, timeout: float) -> float:
    """Wait until the node accepts a connection on its W5500 address and introduces itself as
    the manifest's node; returns the seconds it took."""
    started = time.monotonic()
    # An observer of this cluster and model: a node of another one refuses it (docs/protocol.md).
    observer = Identity(node.identity.cluster, node.identity.model_hash, 0xFFFF, 0)
    try:
        link = NodeLink.open(
            node.name,
            node.host,
            port,
            observer,
            role=Role.OBSERVER,
            connect_timeout=timeout,
            timeout=5.0,
        )
    except HandshakeRefused as exc:
        raise NodeSilent(
            node.name,
            f"{node.host}:{port} is answered by a node of another cluster or model ({exc.what})",
            hint="two nodes with the same IP address? check spec.nodes[*].w5500.ip",
        ) from None
    except NodeFailed as exc:
        raise NodeSilent(
            node.name,
            f"flashed and verified, but not answering at {node.host}:{port} after {timeout:.0f} s "
            f"({exc.message})",
            hint="read the node's log on the ST-LINK virtual COM port (115200 baud); "
            "docs/bring-up.md, 'node never answers'",
        ) from None
    try:
        ack = link.ack
        found = Identity(ack.cluster, ack.model_hash, ack.stage_index, ack.stage_count)
        reported = link.status().firmware_hash.hex() if node.firmware_hash else ""
    except NmcmError as exc:
        raise NodeSilent(node.name, f"answered, then failed: {exc.message}") from None
    finally:
        link.close()
    want = node.identity
    if found != want:
        raise NodeSilent(
            node.name,
            f"{node.host}:{port} answers as cluster {found.cluster!r} stage "
            f"{found.stage_index}/{found.stage_count}, expected cluster {want.cluster!r} stage "
            f"{want.stage_index}/{want.stage_count}",
            hint="two nodes with the same IP address? check spec.nodes[*].w5500.ip",
        )
    if node.firmware_hash and reported != node.firmware_hash[:32]:
        raise NodeSilent(
            node.name,
            f"{node.host}:{port} runs firmware {reported}, not the image just flashed "
            f"({node.firmware_hash[:32]})",
            hint="two nodes with the same IP address? check spec.nodes[*].w5500.ip",
        )
    return time.monotonic() - started


def flash_nodes(
    nodes: Sequence[HardwareNode],
    store: StateStore,
    state: ClusterState,
    step: Callable[[str], None],
    *,
    boot_timeout: float = DEFAULT_BOOT_TIMEOUT,
    settings: dict[str, ProbeSettings] | None = None,
    entries: list[PackEntry] | None = None,
) -> list[NodeOutcome]:
    """Flash, verify, reset and wait for each node; record each success in the state at once.
    Raises FlashIncomplete after trying every node if any failed."""
    if settings is None:  # raises before any probe is touched
        settings = preflight([(n.spec, n.where) for n in nodes], entries)
    outcomes: list[NodeOutcome] = []
    for node in nodes:
        request = settings[node.name].request(node.image)
        started = time.monotonic()
        port = node.desired.port
        step(
            f"flashing {node.name} ({node.spec.mcu}, stage {node.desired.stage}) from "
            f"{request.pack.name}"
        )

        def node_step(message: str, name: str = node.name) -> None:
            step(f"{name}: {message}")

        try:
            result: FlashResult = flash(request, step=node_step)
            step(f"{node.name}: waiting for it to answer at {node.host}:{port}")
            boot_s = wait_answering(node, port, boot_timeout)
        except NmcmError as exc:
            if getattr(exc, "flash_touched", False) or isinstance(exc, NodeSilent):
                _forget_firmware(store, state, node.name)
            what = exc.what if isinstance(exc, FlashError) else exc.message
            outcomes.append(
                NodeOutcome(
                    node=node.name,
                    ok=False,
                    probe=request.uid or "",
                    detail=what,
                    seconds=time.monotonic() - started,
                    hint=exc.hint,
                )
            )
            step(f"{node.name}: FAILED: {what}")
            continue
        _record(store, state, node, result)
        detail = (
            f"{result.bytes_written} bytes flashed and verified, answering at {node.host}:{port} "
            f"{boot_s:.1f} s after reset"
        )
        outcomes.append(
            NodeOutcome(
                node=node.name,
                ok=True,
                probe=result.uid,
                detail=detail,
                seconds=time.monotonic() - started,
            )
        )
        step(f"{node.name}: {detail}")
    if any(not o.ok for o in outcomes):
        raise FlashIncomplete(outcomes)
    return outcomes


def _record(
    store: StateStore, state: ClusterState, node: HardwareNode, result: FlashResult
) -> None:
    state.nodes[node.name] = recorded_node(
        node.desired,
        node.elf or node.image,
        node.desired.port,
        node.identity.model_hash,
        host=node.host,  # a board, not a process: no pid
    )
    store.save(state)


def _forget_firmware(store: StateStore, state: ClusterState, name: str) -> None:
    """The board's flash changed but the node is not known to be up: whatever the state said
    about its firmware is no longer true, so the next apply flashes it again."""
    old = state.nodes.get(name)
    if old is not None and old.firmware_sha256:
        old.firmware_sha256 = ""
        store.save(state)
