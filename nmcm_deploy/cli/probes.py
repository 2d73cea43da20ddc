"""`nmcm probes`: the debug probes connected to this machine, with the unique IDs manifests use."""

from __future__ import annotations

import typer

from nmcm_deploy import terminal
from nmcm_deploy.cli.options import OutputFormat, output_option


def register(app: typer.Typer) -> None:
    app.command(
        "probes",
        help=(
            "List the connected debug probes (pyOCD): unique ID, vendor, product, and the MCU of "
            "the board behind the probe when pyOCD recognises it. Copy a probe's full unique ID "
            "into a node's probe.uid. Never waits for a probe; exits 0 also when none is "
            "connected or pyOCD is not installed.\n\n"
            "Example: nmcm probes -o json"
        ),
    )(probes)


def probes(output: OutputFormat = output_option()) -> None:
    from nmcm_deploy.flash import pyocd_session
    from nmcm_deploy.flash.errors import INSTALL_HINT

    as_json = output is OutputFormat.json
    if not pyocd_session.available():
        if as_json:
            terminal.emit_json({"pyocd": False, "probes": [], "hint": INSTALL_HINT})
        terminal.info(f"pyOCD is not installed: {INSTALL_HINT}")
        return
    found = pyocd_session.list_probes()
    if as_json:
        terminal.emit_json({"pyocd": True, "probes": [p.as_dict() for p in found]})
        return
    if not found:
        terminal.info("no probes connected")
        return
    terminal.table(
        f"{len(found)} probe(s) connected",
        ["unique ID", "vendor", "product", "target"],
        [(p.unique_id, p.vendor, p.product, p.target or "-") for p in found],
    )
