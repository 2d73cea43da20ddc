"""Which CMSIS pack gives pyOCD a node's MCU: always a file on this machine, never a download.

Both reference MCUs are pack targets in pyOCD (``stm32f413zhtx``, ``stm32h7a3zitxq``): without the
vendor's Device Family Pack pyOCD knows neither the part nor its flash algorithm. Runners with the
boards are often offline, so nmcm takes the pack from, in this order:

1. the node's ``probe.pack`` in the manifest;
2. ``$NMCM_PYOCD_PACKS``: entries separated by ``os.pathsep``, each ``MCU=FILE`` or a bare pack
   file or directory;
3. the user's configuration file (``$NMCM_CONFIG``, else ``$XDG_CONFIG_HOME/nmcm/config.yaml``,
   else ``~/.config/nmcm/config.yaml``)::

       packs:
         stm32f413zh: ~/packs/Keil.STM32F4xx_DFP.2.17.1.pack
         stm32h7a3zi: ~/packs/Keil.STM32H7xx_DFP.3.1.1.pack

   or a list of pack files and directories.

A key is an MCU name (``stm32f413zh``) or a pack family (``Keil.STM32F4xx_DFP``). A bare file or
directory serves every MCU whose pack family its file name starts with, as the vendors name them
(``Keil.STM32F4xx_DFP.2.17.1.pack``); among several versions the newest is taken.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from nmcm_deploy.errors import DeployError
from nmcm_deploy.flash.errors import PackMissing
from nmcm_deploy.manifest.model import NodeSpec
from nmcm_deploy.profiles import McuProfile

PACKS_ENV = "NMCM_PYOCD_PACKS"
CONFIG_ENV = "NMCM_CONFIG"
PACK_SUFFIX = ".pack"


@dataclass(frozen=True)
class PackEntry:
    """One configured pack location: for ``key`` (an MCU or family; None = by file name)."""

    key: str | None
    path: Path
    origin: str  # where the setting was read, for messages


@dataclass(frozen=True)
class ResolvedPack:
    path: Path
    origin: str


def config_path() -> Path:
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME")
    root = Path(base) if base else Path.home() / ".config"
    return root / "nmcm" / "config.yaml"


def _entry(text: str, origin: str, base: Path | None) -> PackEntry:
    key, sep, value = text.partition("=")
    if not sep:
        key, value = "", text
    path = Path(value.strip()).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return PackEntry(key.strip() or None, path, origin)


def env_entries() -> list[PackEntry]:
    raw = os.environ.get(PACKS_ENV, "")
    return [_entry(item, PACKS_ENV, None) for item in raw.split(os.pathsep) if item.strip()]


def config_entries(path: Path | None = None) -> list[PackEntry]:
    """The ``packs:`` of the configuration file; none if there is no file. Relative paths are
    relative to the file."""
    path = path or config_path()
    if not path.is_file():
        return []
    try:
        doc: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DeployError(f"{path}: cannot read the nmcm configuration ({exc})") from None
    packs = doc.get("packs") if isinstance(doc, dict) else None
    if packs is None:
        return []
    origin, base = str(path), path.parent
    if isinstance(packs, dict) and all(isinstance(v, str) for v in packs.values()):
        return [_entry(f"{k}={v}", origin, base) for k, v in packs.items()]
    if isinstance(packs, list) and all(isinstance(v, str) for v in packs):
        return [_entry(v, origin, base) for v in packs]
    raise DeployError(
        f"{path}: `packs` must map MCU names to pack files, or list pack files and directories"
    )


def _version(name: str, family: str) -> tuple[int, ...]:
    rest = name[len(family) + 1 : -len(PACK_SUFFIX)]
    return tuple(int(part) for part in re.findall(r"\d+", rest))


def _family_files(entry: PackEntry, family: str) -> list[Path]:
    """The packs of ``family`` that a bare entry offers (the file itself, or files in a folder)."""
    prefix = family.lower() + "."

    def fits(p: Path) -> bool:
        return p.name.lower().startswith(prefix) and p.name.lower().endswith(PACK_SUFFIX)

    if entry.path.is_dir():
        return sorted(p for p in entry.path.iterdir() if p.is_file() and fits(p))
    return [entry.path] if entry.path.is_file() and fits(entry.path) else []


def resolve_pack(
    node: NodeSpec,
    profile: McuProfile,
    where: str,
    entries: list[PackEntry] | None = None,
) -> ResolvedPack:
    """The pack file for ``node``, or PackMissing. ``where`` is the node's manifest path, e.g.
    ``spec.nodes[0]``. Only checks files: no probe is touched."""
    if node.probe is not None and node.probe.pack is not None:
        pack = node.probe.pack
        if not pack.is_file():
            raise PackMissing(node.name, f"pack {pack} ({where}.probe.pack) does not exist")
        return ResolvedPack(pack, f"{where}.probe.pack")
    family = profile.pyocd_pack
    if entries is None:
        entries = env_entries() + config_entries()
    keys = {profile.name.lower(), family.lower()}
    for entry in entries:
        if entry.key is not None and entry.key.lower() in keys:
            if not entry.path.is_file():
                raise PackMissing(
                    node.name,
                    f"pack {entry.path} (for {entry.key}, from {entry.origin}) does not exist",
                )
            return ResolvedPack(entry.path, entry.origin)
    for entry in entries:
        if entry.key is None:
            found = _family_files(entry, family)
            if found:
                best = max(found, key=lambda p: _version(p.name, family))
                return ResolvedPack(best, entry.origin)
    raise PackMissing(
        node.name,
        f"no CMSIS pack for {profile.name} (pyOCD target {profile.pyocd_target} needs "
        f"{family}); nmcm never downloads packs",
        hint=f"get {family}.<version>.pack on a connected machine (keil.arm.com/packs), then "
        f"set {where}.probe.pack, or {PACKS_ENV}, or `packs: {{{profile.name}: FILE}}` in "
        f"{config_path()}",
    )
