"""Options shared by several commands."""

from __future__ import annotations

from enum import Enum

import typer


class OutputFormat(str, Enum):
    text = "text"
    json = "json"


def output_option() -> OutputFormat:
    return typer.Option(
        OutputFormat.text, "--output", "-o", help="Output format: text for people, json for tools."
    )


def target_option() -> str | None:
    return typer.Option(
        None,
        "--target",
        "-t",
        help="sim | qemu | hardware; overrides the manifest's spec.target.",
        show_default=False,
    )


def sim_network_option() -> str | None:
    return typer.Option(
        None,
        "--sim-network",
        help=(
            "posix | w5500-emulator; overrides the manifest's spec.sim.network: sim nodes talk "
            "through host sockets, or through the real W5500 driver and an emulated chip."
        ),
        show_default=False,
    )
