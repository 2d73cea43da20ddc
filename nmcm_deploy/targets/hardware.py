"""The ``hardware`` target: each changed node's ARM image built for its board, then flashed.

The order keeps mistakes cheap: every node's probe settings and pack are checked first (no
build, no probe), then the images are built (content-addressed: unchanged nodes cost nothing),
then the boards are flashed one by one (flash/flasher.py). A board is recorded with its W5500
address; it is alive while that address answers, and idles after SHUTDOWN.
"""

from __future__ import annotations

from nmcm_deploy.build import arm
from nmcm_deploy.compiler.cluster import CompiledStage
from nmcm_deploy.flash.flasher import DEFAULT_BOOT_TIMEOUT, HardwareNode, flash_nodes, preflight
from nmcm_deploy.protocol import Role
from nmcm_deploy.reconcile.desired import Op
from nmcm_deploy.reconcile.state import NodeState
from nmcm_deploy.targets import ports
from nmcm_deploy.targets.base import Deployment, Endpoint

NAME = "hardware"


class HardwareTarget:
    """Brings a cluster's boards to the manifest: flashes the nodes that changed."""

    name = NAME

    def __init__(self, boot_timeout: float = DEFAULT_BOOT_TIMEOUT) -> None:
        self.boot_timeout = boot_timeout

    def firmware_key(self, stage: CompiledStage) -> str:
        return arm.stage_key(stage, NAME)

    def deploy(self, deployment: Deployment) -> None:
        """Flash every node that the changes create, update or find not answering; record each
        success in the state as it happens. Raises FlashIncomplete if any node failed."""
        prepared = deployment.prepared
        touched = deployment.changed(Op.CREATE, Op.UPDATE, Op.START)
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
            deployment.report.step(
                f"building {desired.name} ({desired.mcu}, stage {desired.stage}) for its board"
            )
            key = self.firmware_key(stage)
            image = arm.build_arm_node(
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
            deployment.state,
            deployment.report.step,
            boot_timeout=self.boot_timeout,
            settings=settings,
        )

    def alive(self, node: NodeState) -> bool:
        return ports.listening(node.port, node.host)

    def endpoint(self, node: NodeState, role: Role) -> Endpoint:
        return Endpoint(node.host, node.port)

    def halt(self, node: NodeState) -> None:
        pass  # a board idles after SHUTDOWN until it is reset or flashed
