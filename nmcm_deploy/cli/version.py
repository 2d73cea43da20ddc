"""`nmcm version`: what this nmcm is and speaks, and the tools it would build and run with.

The versions of the tool, the manifest (its ``apiVersion``), the wire protocol and the blob
format; the firmware sources (their digest, the root of every build key); and each external tool
found on PATH with its first version line, or ``null``. Nothing is imported that a manifest would
need (no torch): it answers in a fraction of a second.
"""

from __future__ import annotations

import shutil
from importlib import metadata
from typing import Any

import typer

from nmcm_deploy import __version__, terminal
from nmcm_deploy.cli.options import OutputFormat, output_option

# The tools nmcm runs, by what they are for (docs/architecture.md).
TOOLS = (
    ("g++", "sim nodes and the host trainer"),
    ("cmake", "every firmware build"),
    ("arm-none-eabi-gcc", "qemu and hardware images"),
    ("qemu-system-arm", "the qemu target"),
)
PACKAGES = (("torch", "model factories, artifacts"), ("pyocd", "flashing boards"))


def register(app: typer.Typer) -> None:
    app.command(
        "version",
        help=(
            "Show nmcm's version, the manifest, protocol and blob versions it speaks, the "
            "firmware sources' digest, and the compilers and tools it finds.\n\n"
            "Example: nmcm version -o json"
        ),
    )(version)


def tool_version(command: str) -> str | None:
    """The first line of ``command --version`` (the line build keys hold, build/sources.py), or
    None if it is not on PATH or fails."""
    from nmcm_deploy.build.sources import compiler_id
    from nmcm_deploy.errors import BuildError

    if shutil.which(command) is None:
        return None
    try:
        return compiler_id(command)
    except BuildError:
        return None


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def report() -> dict[str, Any]:
    from nmcm_deploy.build.sources import firmware_dir, source_digest
    from nmcm_deploy.compiler.blob_layout import FORMAT_VERSION as BLOB_FORMAT
    from nmcm_deploy.errors import BuildError
    from nmcm_deploy.manifest.schema import load_schema
    from nmcm_deploy.protocol.spec import VERSION as PROTOCOL_VERSION

    try:
        root = firmware_dir()
        firmware: dict[str, Any] = {"sources": str(root), "digest": source_digest(root)}
    except BuildError as exc:
        firmware = {"sources": None, "digest": None, "problem": exc.message}
    return {
        "tool": __version__,
        "manifest_api_version": load_schema()["properties"]["apiVersion"]["const"],
        "protocol_version": PROTOCOL_VERSION,
        "blob_format_version": BLOB_FORMAT,
        "firmware": firmware,
        "tools": [
            {"name": name, "for": what, "version": tool_version(name)} for name, what in TOOLS
        ],
        "python_packages": [
            {"name": name, "for": what, "version": package_version(name)} for name, what in PACKAGES
        ],
    }


def version(output: OutputFormat = output_option()) -> None:
    data = report()
    if output is OutputFormat.json:
        terminal.emit_json(data)
        return
    out = terminal.out()
    firmware = data["firmware"]
    lines = [
        f"nmcm {data['tool']}",
        f"manifest apiVersion {data['manifest_api_version']}, protocol version "
        f"{data['protocol_version']}, blob format {data['blob_format_version']}",
        (
            f"firmware sources {firmware['sources']} (digest {firmware['digest'][:16]})"
            if firmware["digest"]
            else f"firmware sources: {firmware['problem']}"
        ),
    ]
    for entry in [*data["tools"], *data["python_packages"]]:
        found = entry["version"] or "not found"
        lines.append(f"  {entry['name']:<18} {found}  ({entry['for']})")
    for line in lines:
        out.print(line, markup=False, highlight=False)
