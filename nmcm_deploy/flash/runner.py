"""`apply --target hardware`: each changed node's ARM image built for its board, then flashed.

The order keeps mistakes cheap: every node's probe settings and pack are checked first (no
build, no probe), then the images are built (content-addressed: unchanged nodes cost nothing),
then the boards are flashed one by one (flasher.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nmcm_deploy.flash.flasher import DEFAULT_BOOT_TIMEOUT, HardwareNode, flash_nodes, preflight
from nmcm_deploy.reconcile.desired import Change

if TYPE_CHECKING:
    from nmcm_deploy.reconcile.cluster import Prepared, Reporter
    from nmcm_deploy.reconcile.state import ClusterState

TARGET = "hardware"


class HardwareRunner:
    """Brings a cluster's boards to the manifest: flashes the nodes that changed."""

    target = TARGET

    def __init__(self, boot_timeout: float = DEFAULT_BOOT_TIMEOUT) -> None:
        self.boot_timeout = boot_timeout

    def deploy(
        self,
        prepared: Prepared,
        state: ClusterState,
        changes: list[Change],
        report: Reporter,
    ) -> None:
        """Flash every node that ``changes`` creates, updates or finds not answering; record
        each success in the state as it happens. Raises FlashIncomplete if any node failed."""
        from nmcm_deploy.build.arm import build_arm_node, stage_key

        touched = {
            c.path.split(".")[1]
            for c in changes
            if c.path.startswith("nodes.") and c.op in ("create", "update", "start")
        }
        index = {node.name: i for i, node in enumerate(prepared.manifest.nodes)}
        stages = [
            (stage, desired)
            for stage, desired in zip(prepared.cluster.stages, prepared.desired.nodes, strict=True)
            if desired.name in touched
        ]
        if not stages:
            return
        settings = preflight(
            [
                (stage.plan.node, f"spec.nodes[{index[stage.plan.node.name]}]")
                for stage, _ in stages
            ],
            several=len(prepared.manifest.nodes) > 1,
        )
        nodes = []
        for stage, desired in stages:
            spec = stage.plan.node
            report.step(
                f"building {desired.name} ({desired.mcu}, stage {desired.stage}) for its board"
            )
            key = stage_key(stage, TARGET)
            image = build_arm_node(
                prepared.nodes_dir / desired.name,
                spec.mcu,
                key,
                board=spec.board,
                w5500=spec.w5500,
            )
            nodes.append(
                HardwareNode(
                    spec=spec,
                    where=f"spec.nodes[{index[spec.name]}]",
                    desired=desired,
                    image=image.bin,
                    elf=image.elf,
                    host=stage.network.ip,
                    identity=prepared.identity(stage.plan.index),
                    firmware_hash=key[:32],
                )
            )
        flash_nodes(
            nodes,
            prepared.store,
            state,
            report.step,
            boot_timeout=self.boot_timeout,
            settings=settings,
        )
