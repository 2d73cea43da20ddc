"""`nmcm validate FILE...`: schema and semantic checks, every problem located."""

from __future__ import annotations

from pathlib import Path

import typer

from nmcm_deploy import terminal
from nmcm_deploy.cli.options import OutputFormat, output_option


def register(app: typer.Typer) -> None:
    app.command(
        "validate",
        help=(
            "Check manifests against the schema and the cluster's semantics; report every "
            "problem as FILE:LINE:COL: path: message.\n\n"
            "Example: nmcm validate manifests/quickstart.yaml manifests/*.yaml"
        ),
    )(validate)


def validate(
    files: list[Path] = typer.Argument(..., help="Manifest files.", show_default=False),
    output: OutputFormat = output_option(),
) -> None:
    from nmcm_deploy.manifest import validate_file

    found = []
    for file in files:
        found.extend(validate_file(file))
    if output is OutputFormat.json:
        terminal.emit_json(
            {
                "valid": not found,
                "files": [str(f) for f in files],
                "errors": [p.as_dict() for p in found],
            }
        )
    else:
        terminal.problems(found)
        if not found:
            for file in files:
                terminal.success(f"{file} is valid")
        else:
            terminal.info(
                f"{len(found)} problem(s) in {len({p.location.file for p in found})} file(s)"
            )
    raise typer.Exit(1 if found else 0)
