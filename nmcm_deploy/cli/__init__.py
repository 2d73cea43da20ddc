"""The `nmcm` command line. One module per command; this root only wires them together.

Exit codes: 0 success, 1 error (invalid manifest, failed build, ...), 2 only for
`plan --detailed-exitcode` meaning "changes", and 64 for usage errors (so they never read as 2).
"""

from __future__ import annotations

import sys

import click
import typer

from nmcm_deploy import __version__, terminal
from nmcm_deploy.cli import export, validate
from nmcm_deploy.errors import EXIT_USAGE, NmcmError

app = typer.Typer(
    name="nmcm",
    help="Train PyTorch models on microcontrollers, alone or as a cluster, from a YAML manifest.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"nmcm {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """nmcm: compile a model into per-MCU stages, build firmware, train, and pull the weights back.

    Example: nmcm validate manifests/quickstart.yaml
    """


validate.register(app)
export.register(app)


def main() -> None:
    try:
        rc = app(standalone_mode=False)
    except click.exceptions.UsageError as exc:
        terminal.error(exc.format_message())
        if exc.ctx is not None:
            terminal.info(f"Try '{exc.ctx.command_path} --help' for help.")
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        terminal.error("aborted")
        sys.exit(130)
    except NmcmError as exc:
        terminal.error(exc)
        sys.exit(exc.exit_code)
    except click.exceptions.ClickException as exc:
        terminal.error(exc.format_message())
        sys.exit(exc.exit_code if exc.exit_code != 2 else EXIT_USAGE)
    sys.exit(rc if isinstance(rc, int) else 0)
