"""Where an ARM image's bytes go, per module, from the GNU linker's map file (``-Map``).

The map lists every input section the linker placed, with its size and the object it came from
(``libnmcm_core.a(conv2d.cpp.obj)``, an app's own ``CMakeFiles/<target>.dir/...obj``, newlib's
``libc_nano.a(...)``). Summed per module and per output section, they say which part of the
framework the flash and SRAM pay for: the figures `nmcm build --target hardware -o json` reports
as ``modules``. The stack and the arena are output sections of their own, sized by the build
(``stack``) and the memory plan, and are left out here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Output sections by what they cost: code and constants live in flash, .data in both (its initial
# values are copied from flash), .bss in SRAM only.
FLASH_ONLY = {".isr_vector": "text", ".text": "text", ".ARM.exidx": "text", ".ARM.extab": "text"}
FLASH_ONLY |= {".rodata": "rodata"}
KINDS = ("text", "rodata", "data", "bss")

_OUTPUT = re.compile(r"^(\.[\w.]+)\s+0x[0-9a-f]+\s+0x([0-9a-f]+)")
_OUTPUT_ALONE = re.compile(r"^(\.[\w.]+)\s*$")
_INPUT = re.compile(r"^ (\S+)?\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S.*?)\s*$")
_INPUT_NAME = re.compile(r"^ (\.\S+|COMMON)\s*$")
_WRAPPED_SIZE = re.compile(r"^\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s*$")
_ARCHIVE = re.compile(r"lib([\w+]+?)\.a\(")

# The framework's libraries (firmware/*/CMakeLists.txt) by what they are.
LIBRARIES = {
    "nmcm_core": "core (layers, stage, blob)",
    "nmcm_runtime": "runtime (node)",
    "nmcm_runtime_w5500": "runtime: W5500 network",
    "nmcm_runtime_uart": "runtime: UART network",
    "nmcm_net": "net (frames, protocol)",
    "nmcm_w5500": "driver: W5500",
    "c_nano": "newlib (libc)",
    "g_nano": "newlib (libc)",
    "c": "newlib (libc)",
    "g": "newlib (libc)",
    "m": "newlib (libm)",
    "gcc": "libgcc",
    "stdc++_nano": "libstdc++",
    "stdc++": "libstdc++",
    "nosys": "newlib (libnosys)",
}


def module_of(source: str) -> str:
    """The module an input section's object belongs to."""
    archive = _ARCHIVE.search(source)
    if archive is not None:
        name = archive.group(1)
        if name.startswith("nmcm_port_"):
            return f"port ({name.removeprefix('nmcm_port_')})"
        return LIBRARIES.get(name, name)
    if "stage_blob" in source:
        return "stage blob"
    if "CMakeFiles/" in source:
        target = source.split("CMakeFiles/", 1)[1].split("/", 1)[0].removesuffix(".dir")
        return f"app ({target})"
    if source == "linker stubs" or "crt" in Path(source).name:
        return "startup (crt)"
    return Path(source).name


@dataclass(frozen=True)
class ModuleSize:
    module: str
    text: int
    rodata: int
    data: int
    bss: int

    @property
    def flash_bytes(self) -> int:
        return self.text + self.rodata + self.data

    @property
    def sram_bytes(self) -> int:
        return self.data + self.bss

    def as_dict(self) -> dict[str, object]:
        return {
            "module": self.module,
            "flash_bytes": self.flash_bytes,
            "sram_bytes": self.sram_bytes,
            "text": self.text,
            "rodata": self.rodata,
            "data": self.data,
            "bss": self.bss,
        }


def _kind(output: str) -> str | None:
    if output in FLASH_ONLY:
        return FLASH_ONLY[output]
    if output == ".data" or output.endswith("_data"):
        return "data"
    if output == ".bss" or output.endswith("_bss"):
        return "bss"
    return None


# The last row: what the output sections hold beyond their input sections (alignment padding) or
# short of them (string constants the linker merged across objects, counted in each object).
BALANCE = "(padding, merged constants)"


def module_sizes(map_file: Path) -> list[ModuleSize]:
    """Per module, the bytes of its input sections in the image's code, constants, .data and
    .bss, largest flash first; then the BALANCE row, so that the rows add up to the output
    sections, as the ELF has them."""
    text = map_file.read_text(errors="replace")
    marker = text.find("Linker script and memory map")
    if marker < 0:
        raise ValueError(f"{map_file} is not a GNU ld map file")
    sizes: dict[str, dict[str, int]] = {}
    outputs = dict.fromkeys(KINDS, 0)
    kind: str | None = None
    wrapped: str | None = None
    pending: str | None = None
    for line in text[marker:].splitlines():
        output = _OUTPUT.match(line)
        if output is not None:
            kind = _kind(output.group(1))
            if kind is not None:
                outputs[kind] += int(output.group(2), 16)
            pending = None
            continue
        alone = _OUTPUT_ALONE.match(line)
        if alone is not None:
            # An empty output section, or a name too long for its column: then its address and
            # size follow on the next line.
            kind = _kind(alone.group(1))
            wrapped = kind
            pending = None
            continue
        if wrapped is not None:
            follows = _WRAPPED_SIZE.match(line)
            if follows is not None:
                outputs[wrapped] += int(follows.group(1), 16)
            wrapped = None
        if kind is None:
            continue
        name = _INPUT_NAME.match(line)
        if name is not None:
            pending = name.group(1)
            continue
        placed = _INPUT.match(line)
        if placed is None:
            continue
        section = placed.group(1) or pending
        pending = None
        if section is None or not (section.startswith(".") or section == "COMMON"):
            continue  # a symbol's line, or *fill*
        size = int(placed.group(2), 16)
        if size:
            per_kind = sizes.setdefault(module_of(placed.group(3)), dict.fromkeys(KINDS, 0))
            per_kind[kind] += size
    modules = [ModuleSize(module, **k) for module, k in sizes.items()]
    modules.sort(key=lambda m: (-m.flash_bytes, -m.sram_bytes, m.module))
    balance = {k: outputs[k] - sum(per_kind[k] for per_kind in sizes.values()) for k in KINDS}
    if any(balance.values()):
        modules.append(ModuleSize(BALANCE, **balance))
    return modules
