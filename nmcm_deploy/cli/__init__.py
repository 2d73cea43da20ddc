"""The `nmcm` command line. One module per command; this root only wires them together.

Exit codes: 0 success, 1 error (invalid manifest, failed build, ...), 2 only for
`plan --detailed-exitcode` meaning "changes", and 64 for usage errors (so they never read as 2).
"""

from __future__ import annotations

import errno
import sys

import typer

from nmcm_deploy import __version__, terminal
from nmcm_deploy.cli import (
    apply,
    build,
    calibrate,
    down,
    estimate,
    export,
    logs,
    plan,
    probes,
    status,
    study,
    validate,
    version,
)
from nmcm_deploy.errors import (
    EXIT_CHANGES,
    EXIT_ERROR,
    EXIT_USAGE,
    ChangesPending,
    ManifestInvalid,
    NmcmError,
)

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
FILE_SYSTEM_ERRORS = {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT}

app = typer.Typer(
    name="nmcm",
    help="Train PyTorch models on microcontrollers, alone or as a cluster, from a YAML manifest.",
    no_args_is_help=True,
    add_completion=True,
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
estimate.register(app)
calibrate.register(app)
study.register(app)
build.register(app)
plan.register(app)
apply.register(app)
status.register(app)
down.register(app)
logs.register(app)
probes.register(app)
version.register(app)


def main() -> None:
    """Entry point. Typer reports usage errors itself with exit status 2; that number belongs to
    `plan --detailed-exitcode` ("changes"), so usage errors leave with 64 instead, and commands
    that mean "changes" raise ``ChangesPending`` rather than exiting 2 themselves."""
    try:
        app(prog_name="nmcm")  # also as `python -m nmcm_deploy`: help, usage and completion
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if code == EXIT_INTERRUPTED:  # Typer's answer to Ctrl-C: say so
            terminal.error("interrupted")
        sys.exit(EXIT_USAGE if code == 2 else code)
    except ChangesPending:
        sys.exit(EXIT_CHANGES)
    except ManifestInvalid as exc:
        terminal.problems(exc.problems)
        terminal.error(exc)
        sys.exit(exc.exit_code)
    except NmcmError as exc:
        terminal.error(exc)
        sys.exit(exc.exit_code)
    except OSError as exc:
        # A file system that refuses a write (read-only, full, permissions) where no domain code
        # named it already: the user's to fix, so a message and not a traceback.
        if exc.errno not in FILE_SYSTEM_ERRORS:
            raise
        terminal.error(f"cannot write {exc.filename or 'a file'}: {exc.strerror}")
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        terminal.error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
