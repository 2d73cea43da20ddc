"""Flash and SRAM of a firmware image, read from its ELF (pyelftools) against the MCU's memories.

- **Flash** is every byte the image stores in a flash region: each allocated section that has
  contents (not NOLOAD), at its *load* address (LMA, from the program headers). That is the vector
  table, code, read-only data, the embedded stage blob, and the initial values of ``.data``, which
  live in flash and are copied to SRAM at reset.
- **SRAM** is every allocated section whose *run* address (VMA) lies in an SRAM region, NOLOAD
  included: ``.stack`` (the reserve the linker script sets aside), ``.data``, ``.bss`` and
  ``.arena``. Each region is reported on its own and must fit its own size.

A section that straddles two regions (code running from flash bank 1 into bank 2) is split at
the boundary. Bytes that land in no region of the profile are reported as unplaced: the image was
linked for other memories than the profile says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import Section, SymbolTableSection
from elftools.elf.segments import Segment

from nmcm_deploy.errors import BuildError
from nmcm_deploy.profiles import McuProfile, MemoryRegion

# The symbol the node firmware gives the embedded stage blob (firmware/apps/node-board).
BLOB_SYMBOL = "nmcm_stage_blob"


@dataclass(frozen=True)
class SectionSize:
    name: str
    vma: int  # where it runs
    lma: int  # where its bytes are stored (== vma for sections copied nowhere)
    size: int
    loaded: bool  # has contents in the image (False: NOLOAD / .bss-like)


@dataclass(frozen=True)
class RegionUsage:
    """One memory region of the MCU and what the image puts there."""

    name: str
    kind: str  # "flash" | "sram"
    origin: int
    capacity: int
    sections: tuple[tuple[str, int], ...]  # (section, bytes in this region), in address order

    @property
    def used(self) -> int:
        return sum(n for _, n in self.sections)

    @property
    def free(self) -> int:
        return self.capacity - self.used

    @property
    def fits(self) -> bool:
        return self.used <= self.capacity

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "origin": f"0x{self.origin:08x}",
            "used_bytes": self.used,
            "capacity": self.capacity,
            "fits": self.fits,
            "sections": dict(self.sections),
        }


@dataclass(frozen=True)
class ElfSizes:
    """What an image takes, per region and in the two figures `nmcm build` reports.

    ``sram_bytes`` is what the image puts in the arena's region and ``sram_capacity`` that region's
    usable size from the profile: the pair the compiler's prediction (arena + runtime reserve) is
    about. On the F413 that region is all of SRAM; on the H7A3 it is AXI SRAM, and DTCM (stack,
    .data, .bss) is a region of its own in ``regions``.
    """

    path: Path
    sections: tuple[SectionSize, ...]
    regions: tuple[RegionUsage, ...]  # every region the image uses and the arena's, flash first
    flash_bytes: int
    flash_capacity: int
    sram_bytes: int
    sram_capacity: int
    sram_region: str
    blob_bytes: int  # the embedded stage blob (0 if the image has none)
    unplaced: tuple[tuple[str, int], ...] = field(default=())  # (section, bytes) in no region

    @property
    def sram_total_bytes(self) -> int:
        return sum(r.used for r in self.regions if r.kind == "sram")

    @property
    def code_bytes(self) -> int:
        """Flash without the blob: the framework's own code, constants and .data image."""
        return self.flash_bytes - self.blob_bytes

    def section(self, name: str) -> SectionSize | None:
        return next((s for s in self.sections if s.name == name), None)

    def region(self, name: str) -> RegionUsage | None:
        return next((r for r in self.regions if r.name == name), None)

    @property
    def fits(self) -> bool:
        return (
            not self.unplaced
            and all(r.fits for r in self.regions)
            and self.flash_bytes <= self.flash_capacity
            and self.sram_bytes <= self.sram_capacity
        )

    def shortfall(self) -> str:
        """Why the image does not fit, one clause per reason; empty if it fits."""
        parts = [
            f"{r.name} {r.used:,} B > {r.capacity:,} B (over by {r.used - r.capacity:,} B)"
            for r in self.regions
            if not r.fits
        ]
        if self.flash_bytes > self.flash_capacity:
            parts.append(f"flash {self.flash_bytes:,} B > {self.flash_capacity:,} B")
        if self.sram_bytes > self.sram_capacity:
            parts.append(f"SRAM {self.sram_bytes:,} B > {self.sram_capacity:,} B")
        parts += [f"{name}: {n:,} B outside every memory region" for name, n in self.unplaced]
        return "; ".join(parts)


def _overlap(start: int, size: int, region: MemoryRegion) -> int:
    return max(0, min(start + size, region.end) - max(start, region.origin))


def read_sections(path: Path) -> tuple[list[SectionSize], dict[str, int]]:
    """Every allocated, non-empty section with its run and load address; and the sizes of the
    image's object symbols by name (for the blob)."""
    try:
        with open(path, "rb") as fh:
            elf = ELFFile(fh)
            loads = [seg for seg in elf.iter_segments() if seg["p_type"] == "PT_LOAD"]
            sections: list[SectionSize] = []
            symbols: dict[str, int] = {}
            for sec in elf.iter_sections():
                if isinstance(sec, SymbolTableSection):
                    for sym in sec.iter_symbols():
                        if sym["st_info"]["type"] == "STT_OBJECT":
                            symbols[sym.name] = int(sym["st_size"])
                if not sec["sh_flags"] & SH_FLAGS.SHF_ALLOC or sec["sh_size"] == 0:
                    continue
                sections.append(_placed(sec, loads))
    except (OSError, ELFError) as exc:
        raise BuildError(f"cannot read the ELF {path}: {exc}") from None
    sections.sort(key=lambda s: (s.vma, s.name))
    return sections, symbols


def symbol_addresses(path: Path, names: Sequence[str]) -> dict[str, int]:
    """The addresses of the image's symbols ``names`` (those it has)."""
    wanted = set(names)
    found: dict[str, int] = {}
    try:
        with open(path, "rb") as fh:
            for sec in ELFFile(fh).iter_sections():
                if isinstance(sec, SymbolTableSection):
                    for sym in sec.iter_symbols():
                        if sym.name in wanted:
                            found[sym.name] = int(sym["st_value"])
    except (OSError, ELFError) as exc:
        raise BuildError(f"cannot read the ELF {path}: {exc}") from None
    return found


def _placed(sec: Section, loads: list[Segment]) -> SectionSize:
    vma = int(sec["sh_addr"])
    loaded = sec["sh_type"] != "SHT_NOBITS"
    lma = vma
    for seg in loads:
        if seg.section_in_segment(sec):
            lma = int(seg["p_paddr"]) + vma - int(seg["p_vaddr"])
            break
    return SectionSize(sec.name, vma, lma, int(sec["sh_size"]), loaded)


def measure(
    path: Path,
    *,
    flash_regions: tuple[MemoryRegion, ...],
    sram_regions: tuple[MemoryRegion, ...],
    flash_capacity: int,
    sram_region: str,
    sram_capacity: int,
) -> ElfSizes:
    """Sizes of the image at ``path`` against the given memories (``elf_sizes`` takes them from an
    MCU profile; QEMU's boards have memories of their own)."""
    sections, symbols = read_sections(path)
    per_region: dict[str, list[tuple[str, int]]] = {}
    unplaced: list[tuple[str, int]] = []
    for sec in sections:
        # Flash: the stored bytes at their load address. SRAM: the run address, loaded or not.
        placements: list[tuple[str, tuple[MemoryRegion, ...], int]] = [
            ("sram", sram_regions, sec.vma)
        ]
        if sec.loaded:
            placements.append(("flash", flash_regions, sec.lma))
        counted = 0
        for _, candidates, start in placements:
            for region in candidates:
                n = _overlap(start, sec.size, region)
                if n:
                    per_region.setdefault(region.name, []).append((sec.name, n))
                    counted += n
        # A section is placed once (NOLOAD: in SRAM) or twice (.data: flash image and SRAM copy)
        # or once in flash (code, constants: the VMA is in no SRAM region).
        expected = sec.size * (2 if sec.loaded and sec.vma != sec.lma else 1)
        if counted < expected:
            unplaced.append((sec.name, expected - counted))

    regions = tuple(
        RegionUsage(r.name, kind, r.origin, r.size, tuple(per_region.get(r.name, ())))
        for kind, group in (("flash", flash_regions), ("sram", sram_regions))
        for r in group
        if r.name in per_region or r.name == sram_region
    )
    flash_bytes = sum(r.used for r in regions if r.kind == "flash")
    arena_usage = next((r for r in regions if r.name == sram_region), None)
    return ElfSizes(
        path=path,
        sections=tuple(sections),
        regions=regions,
        flash_bytes=flash_bytes,
        flash_capacity=flash_capacity,
        sram_bytes=arena_usage.used if arena_usage else 0,
        sram_capacity=sram_capacity,
        sram_region=sram_region,
        blob_bytes=symbols.get(BLOB_SYMBOL, 0),
        unplaced=tuple(unplaced),
    )


def elf_sizes(path: Path, profile: McuProfile) -> ElfSizes:
    """Sizes of a board image against its MCU profile (regions, capacities, the arena's region)."""
    return measure(
        path,
        flash_regions=profile.flash_regions,
        sram_regions=profile.sram_regions,
        flash_capacity=profile.flash_capacity,
        sram_region=profile.arena_region,
        sram_capacity=profile.sram_capacity,
    )
