"""Checks of what runs where: what target hardware requires of the manifest, MCUs and boards
nmcm has profiles for, and W5500 pins that do not collide on the board."""

from __future__ import annotations

from typing import Any

from nmcm_deploy import profiles
from nmcm_deploy.manifest.checks.context import (
    Context,
    Where,
    as_dict,
    as_list,
    as_str,
    did_you_mean,
)


def check_target(ctx: Context) -> None:
    """On hardware the network, the W5500s, the boards and (with several boards) the probes
    must all be given; sim and qemu need none of them."""
    if ctx.spec.get("target") != "hardware" or not ctx.clean("spec", "target"):
        return
    net = ctx.spec.get("network")
    for key in ("subnet", "coordinator"):
        if isinstance(net, dict) and key not in net:
            ctx.add(("spec", "network"), f"target hardware needs network.{key}", at_key=True)
    if net is None:
        ctx.add(("spec",), "target hardware needs spec.network (subnet, coordinator)", at_key=True)
    several = len(as_list(ctx.spec.get("nodes"))) > 1
    for i, node in ctx.nodes():
        base: Where = ("spec", "nodes", i)
        if "w5500" not in node:
            ctx.add(base, "target hardware needs w5500: {ip, mac} on every node")
        if "board" not in node:
            ctx.add(base, "target hardware needs the node's board (its pins come from the board)")
        if several and "probe" not in node:
            ctx.add(base, "target hardware with several nodes needs probe.uid to tell them apart")


def check_profiles(ctx: Context) -> None:
    """MCUs and boards are ones nmcm has profiles for, boards carry the node's MCU, and W5500 pin
    overrides do not collide with each other or the board's SPI and log UART pins."""
    mcus, boards = profiles.mcu_names(), profiles.board_names()
    for i, node in ctx.nodes():
        base: Where = ("spec", "nodes", i)
        mcu = as_str(node.get("mcu"))
        if mcu is not None and ctx.clean(*base, "mcu") and mcu not in mcus:
            ctx.add(
                (*base, "mcu"),
                f"unknown MCU {mcu!r}{did_you_mean(mcu, mcus)} (known: {', '.join(mcus)})",
            )
            mcu = None
        name = as_str(node.get("board"))
        if name is None or not ctx.clean(*base, "board"):
            continue
        if name not in boards:
            ctx.add(
                (*base, "board"),
                f"unknown board {name!r}{did_you_mean(name, boards)} (known: {', '.join(boards)})",
            )
            continue
        board = profiles.board(name)
        if mcu is not None and board.mcu != mcu:
            ctx.add((*base, "board"), f"board {name} carries the {board.mcu}, not the {mcu}")
        w5500 = as_dict(node.get("w5500"))
        if ctx.clean(*base, "w5500"):
            _check_pins(ctx, (*base, "w5500"), w5500, board)


def _check_pins(
    ctx: Context, base: Where, w5500: dict[str, Any], board: profiles.BoardProfile
) -> None:
    taken = {
        board.w5500.sck: "SPI SCK",
        board.w5500.miso: "SPI MISO",
        board.w5500.mosi: "SPI MOSI",
        board.log_uart.tx: "log UART TX",
        board.log_uart.rx: "log UART RX",
    }
    cs = as_str(w5500.get("cs")) or board.w5500.cs
    reset = as_str(w5500.get("reset")) or board.w5500.reset
    for key, pin in (("cs", cs), ("reset", reset)):
        if key in w5500 and pin in taken:
            ctx.add((*base, key), f"{pin} is the {board.name}'s {taken[pin]} pin")
    if cs == reset:
        key = "reset" if "reset" in w5500 else "cs"
        ctx.add((*base, key), f"cs and reset are the same pin {cs}")
