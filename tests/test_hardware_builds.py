"""`nmcm build --target hardware`: every example manifest's node firmware cross-built for its
board (arm-none-eabi-gcc through CMake and the toolchain file), flash and SRAM read from the ELF
per memory region against the MCU, checked against the compiler's prediction that `validate`
uses, and content-addressed (a second build is a cache hit).

The whole module shares one state folder: the ARM build trees (the libraries compiled once per
MCU) and the images. Every example manifest is built once, by the CLI as a user runs it; the
tests then read those builds. They build from a copy of firmware/ taken when the module starts
(NMCM_FIRMWARE_DIR), so that "unchanged inputs" holds while someone edits the tree. The toolchain
is installed by `make setup`: when it is missing these tests fail, they do not skip.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from nmcm_deploy import profiles
from nmcm_deploy.build import arm
from nmcm_deploy.build import stack as stack_module
from nmcm_deploy.build.elfsize import elf_sizes, measure, symbol_addresses
from nmcm_deploy.build.mapfile import BALANCE
from nmcm_deploy.compiler.cluster import build_model
from nmcm_deploy.costs import planner
from nmcm_deploy.manifest import load_manifest
from nmcm_deploy.profiles import MemoryRegion
from tests.conftest import MANIFESTS, QUICKSTART, ROOT, Result, run_nmcm

EXAMPLES = [QUICKSTART, *sorted((MANIFESTS / "examples").glob("*.yaml"))]
FLASH_ORIGIN = 0x0800_0000  # both parts boot from here
DEFAULT_STACK = {"stm32f413zh": 16 * 1024, "stm32h7a3zi": 32 * 1024}  # the ports' memory.ld

NODE_FIELDS = {
    "name",
    "mcu",
    "board",
    "stage",
    "target",
    "image",
    "bin",
    "hex",
    "firmware_sha256",
    "rebuilt",
    "sizes_from",
    "fits",
    "flash_bytes",
    "flash_capacity",
    "sram_bytes",
    "sram_capacity",
    "sram_region",
    "sram_total_bytes",
    "blob_bytes",
    "code_bytes",
    "arena_bytes",
    "regions",
    "predicted_flash_bytes",
    "predicted_sram_bytes",
    "flash_prediction_slack",
    "sram_prediction_slack",
    "prediction_holds",
    "stack",
}


@dataclass
class HardwareBuild:
    manifest: Path
    result: Result
    seconds: float

    @property
    def doc(self) -> dict[str, Any]:
        assert self.result.code == 0, self.result.output[-3000:]
        doc: dict[str, Any] = json.loads(self.result.stdout)
        return doc

    @property
    def nodes(self) -> list[dict[str, Any]]:
        nodes: list[dict[str, Any]] = self.doc["nodes"]
        return nodes


def build_hardware(manifest: Path, state: Path) -> HardwareBuild:
    """`nmcm build MANIFEST --target hardware -o json` with the module's state and firmware."""
    env = {"NMCM_STATE_DIR": str(state), "NMCM_FIRMWARE_DIR": str(state / "firmware")}
    start = time.monotonic()
    result = run_nmcm("build", manifest, "--target", "hardware", "-o", "json", env=env)
    return HardwareBuild(manifest, result, time.monotonic() - start)


@pytest.fixture(scope="module")
def hw_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("cmake", "arm-none-eabi-gcc", "arm-none-eabi-size"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: `make setup` installs the ARM toolchain", pytrace=False)
    state = tmp_path_factory.mktemp("hw-state")
    shutil.copytree(ROOT / "firmware", state / "firmware")
    return state


@pytest.fixture(scope="module")
def hw_builds(hw_state: Path) -> dict[str, HardwareBuild]:
    return {m.stem: build_hardware(m, hw_state) for m in EXAMPLES}


def manifest_ids() -> list[str]:
    return [m.stem for m in EXAMPLES]


def stage_nodes(manifest: Path) -> list[str]:
    """The nodes of the pipeline in order: the manifest's stages, or the planner's for auto."""
    loaded = load_manifest(manifest)
    _, ir = build_model(loaded)
    return [node for node, _, _ in planner.resolve(loaded, ir)]


def node_folder(state: Path, build: HardwareBuild, node: str) -> Path:
    """Where `nmcm build` exported the node (its stage.blob and nmcm_stage.h)."""
    return state / build.doc["cluster"] / "nodes" / node


def berkeley(elf: str) -> tuple[int, int, int]:
    out = subprocess.run(
        ["arm-none-eabi-size", "--format=berkeley", elf], capture_output=True, text=True, check=True
    ).stdout
    text, data, bss = out.splitlines()[1].split()[:3]
    return int(text), int(data), int(bss)


def hex_data(path: str) -> tuple[int, int]:
    """(lowest address, data bytes) of an Intel HEX file's data records."""
    base, lowest, count = 0, None, 0
    for line in Path(path).read_text().split():
        length, address, kind = int(line[1:3], 16), int(line[3:7], 16), int(line[7:9], 16)
        if kind == 4:  # extended linear address: the upper 16 bits
            base = int(line[9:13], 16) << 16
        elif kind == 0:
            lowest = base + address if lowest is None else min(lowest, base + address)
            count += length
    assert lowest is not None
    return lowest, count


def inside(region: MemoryRegion, address: int, size: int) -> bool:
    return region.origin <= address and address + size <= region.end


# --- the report ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", manifest_ids())
def test_build_reports_every_node_against_its_mcu(
    hw_builds: dict[str, HardwareBuild], name: str
) -> None:
    build = hw_builds[name]
    assert build.doc["format_version"] == 1 and build.doc["target"] == "hardware"
    assert [n["name"] for n in build.nodes] == stage_nodes(build.manifest)
    for node in build.nodes:
        assert node.keys() >= NODE_FIELDS, NODE_FIELDS - node.keys()
        profile = profiles.mcu(node["mcu"])
        assert node["target"] == "hardware" and node["sizes_from"] == "elf"
        assert node["image"].endswith(".elf")
        for key in ("image", "bin", "hex"):
            assert Path(node[key]).is_file(), node[key]
        assert node["flash_capacity"] == profile.flash_capacity
        assert node["sram_capacity"] == profile.sram_capacity
        assert node["sram_region"] == profile.arena_region
        assert node["fits"] and node["shortfall"] == ""
        assert 0 < node["flash_bytes"] <= node["flash_capacity"]
        assert 0 < node["sram_bytes"] <= node["sram_capacity"]
        for region in node["regions"]:
            assert region["fits"] and region["used_bytes"] <= region["capacity"], region


@pytest.mark.parametrize("name", manifest_ids())
def test_sizes_are_read_from_the_elf(hw_builds: dict[str, HardwareBuild], name: str) -> None:
    for node in hw_builds[name].nodes:
        # binutils' own count: flash = text + data (the .data image), SRAM = data + bss (which
        # for `size` includes the NOLOAD .stack and .arena).
        text, data, bss = berkeley(node["image"])
        assert node["flash_bytes"] == text + data
        assert node["sram_total_bytes"] == data + bss
        # The HEX file holds exactly the flash bytes, from the first flash address on; the BIN
        # is the same bytes with the alignment gaps between sections filled.
        lowest, count = hex_data(node["hex"])
        assert lowest == FLASH_ORIGIN and count == node["flash_bytes"]
        assert 0 <= Path(node["bin"]).stat().st_size - node["flash_bytes"] < 64
        # And the report is what elfsize reads from the image again.
        sizes = elf_sizes(Path(node["image"]), profiles.mcu(node["mcu"]))
        assert [r.as_dict() for r in sizes.regions] == node["regions"]
        # What apply's summary shows for a flashed node: the ELF beside the .bin it recorded.
        beside = arm.image_sizes(Path(node["bin"]), "hardware", node["mcu"])
        assert beside is not None and beside.regions == sizes.regions


@pytest.mark.parametrize("name", manifest_ids())
def test_the_module_table_accounts_for_the_image(
    hw_builds: dict[str, HardwareBuild], name: str
) -> None:
    """Per module, from the linker map, with the balance row last (alignment padding, constants
    merged across objects): the rows add up to the image's flash exactly, and their SRAM to every
    SRAM section but the stack and the arena; the framework's libraries are named."""
    for node in hw_builds[name].nodes:
        assert node["modules_from"] == "linker map"
        modules = {m["module"]: m for m in node["modules"]}
        for m in modules.values():
            assert m["flash_bytes"] == m["text"] + m["rodata"] + m["data"]
            assert m["sram_bytes"] == m["data"] + m["bss"]
        assert sum(m["flash_bytes"] for m in modules.values()) == node["flash_bytes"]
        sram = [
            size
            for r in node["regions"]
            if r["kind"] == "sram"
            for section, size in r["sections"].items()
            if section not in (".stack", ".arena")
        ]
        assert sum(m["sram_bytes"] for m in modules.values()) == sum(sram)
        # Padding and merging are small beside what the modules hold.
        assert abs(modules[BALANCE]["flash_bytes"]) < 1024, modules[BALANCE]
        for library in ("core (layers, stage, blob)", "runtime (node)", "net (frames, protocol)"):
            assert modules[library]["flash_bytes"] > 1024, modules
        assert modules["stage blob"]["rodata"] >= node["blob_bytes"]


@pytest.mark.parametrize("name", manifest_ids())
def test_sections_land_where_the_profile_says(
    hw_state: Path, hw_builds: dict[str, HardwareBuild], name: str
) -> None:
    build = hw_builds[name]
    for node in build.nodes:
        profile = profiles.mcu(node["mcu"])
        flash = MemoryRegion("flash", FLASH_ORIGIN, profile.flash_capacity)
        # Stack, .data and .bss: all of SRAM on the F413, DTCM on the H7A3; the arena in the
        # profile's arena region (AXI SRAM on the H7A3).
        ram = profile.arena if node["mcu"] == "stm32f413zh" else profile.region("DTCM")
        sizes = elf_sizes(Path(node["image"]), profile)
        placed = {s.name: s for s in sizes.sections}
        assert placed[".isr_vector"].vma == FLASH_ORIGIN
        for section in (".isr_vector", ".text", ".rodata"):
            assert inside(flash, placed[section].vma, placed[section].size), section
        assert inside(flash, placed[".data"].lma, placed[".data"].size)
        for section in (".stack", ".data", ".bss"):
            assert inside(ram, placed[section].vma, placed[section].size), section
        arena = placed[".arena"]
        assert inside(profile.arena, arena.vma, arena.size)
        assert arena.size == (node["arena_bytes"] + 15) // 16 * 16 and arena.vma % 16 == 0

        with open(node["image"], "rb") as fh:
            elf = ELFFile(fh)
            vectors, symtab, rodata = (
                elf.get_section_by_name(n) for n in (".isr_vector", ".symtab", ".rodata")
            )
            assert isinstance(symtab, SymbolTableSection) and vectors and rodata
            words = vectors.data()[:8]
            found = {
                n: (symtab.get_symbol_by_name(n) or [])[0]
                for n in ("__stack_end__", "Reset_Handler", "nmcm_stage_blob")
            }
            rodata_bytes = rodata.data()
            blob_symbol = found["nmcm_stage_blob"]
            offset = blob_symbol["st_value"] - rodata["sh_addr"]
            embedded = rodata_bytes[offset : offset + blob_symbol["st_size"]]
        # Initial SP at the top of the stack, Reset_Handler (Thumb) next: the part boots.
        assert int.from_bytes(words[:4], "little") == found["__stack_end__"]["st_value"]
        assert int.from_bytes(words[4:], "little") == found["Reset_Handler"]["st_value"] | 1
        # The blob in flash is the exported stage.blob, byte for byte, 16-byte aligned.
        blob = (node_folder(hw_state, build, node["name"]) / "stage.blob").read_bytes()
        assert embedded == blob and node["blob_bytes"] == len(blob)
        assert blob_symbol["st_value"] % 16 == 0
        # The build key is the firmware hash the node reports (HELLO_ACK, STATUS).
        assert bytes.fromhex(node["firmware_sha256"][:32]) in rodata_bytes


@pytest.mark.parametrize("name", manifest_ids())
def test_prediction_and_elf_agree_within_the_reserve(
    hw_builds: dict[str, HardwareBuild], name: str
) -> None:
    """`validate` predicts a node's SRAM as arena + the MCU's runtime reserve, in the arena's
    region; the ELF has arena + stack + .data + .bss there on the F413 (one SRAM region), and
    the arena alone on the H7A3 (AXI SRAM; the stack, .data and .bss are in DTCM, reserve 0).
    Flash is predicted as blob + the code reserve; the ELF has blob + code + the .data image.
    So the prediction minus the ELF is the reserve minus what the firmware itself takes: it must
    lie between 0 (the reserve covers the firmware: nothing `validate` passes can fail to link)
    and the reserve (the arena and the blob are exactly as planned)."""
    for node in hw_builds[name].nodes:
        profile = profiles.mcu(node["mcu"])
        sram_slack = node["predicted_sram_bytes"] - node["sram_bytes"]
        flash_slack = node["predicted_flash_bytes"] - node["flash_bytes"]
        assert node["sram_prediction_slack"] == sram_slack
        assert node["flash_prediction_slack"] == flash_slack
        assert 0 <= sram_slack <= profile.runtime_sram_reserve, node
        assert 0 <= flash_slack <= profile.runtime_flash_reserve, node
        assert node["prediction_holds"]
        # The exact parts: the planned arena and the blob estimate are what the linker placed.
        assert node["predicted_sram_bytes"] - profile.runtime_sram_reserve == node["arena_bytes"]
        assert node["predicted_flash_bytes"] - profile.runtime_flash_reserve == node["blob_bytes"]
        assert node["code_bytes"] == node["flash_bytes"] - node["blob_bytes"]


@pytest.mark.parametrize("name", manifest_ids())
def test_the_stack_report_follows_the_call_graph_into_the_reserved_stack(
    hw_builds: dict[str, HardwareBuild], name: str
) -> None:
    for node in hw_builds[name].nodes:
        stack = node["stack"]
        assert stack["source"] == "gcc -fcallgraph-info=su"
        # The path starts at the reset handler, goes through main and the node's loop.
        assert "Reset_Handler" in stack["path"][0] and any("main" in p for p in stack["path"])
        assert stack["worst_bytes"] == stack["main_bytes"] + stack["handler_bytes"]
        assert stack["handler_bytes"] >= 26 * 4  # at least the frame the core pushes
        # The reserve is the linker script's .stack, as the ELF places it; the margin is left.
        symbols = symbol_addresses(Path(node["image"]), ("__stack_start__", "__stack_end__"))
        assert stack["reserved_bytes"] == symbols["__stack_end__"] - symbols["__stack_start__"]
        assert stack["margin_bytes"] == stack["reserved_bytes"] - stack["worst_bytes"]
        assert stack["margin_bytes"] > 0, stack
        # No call cycle: a HELLO reads the other connection of its role without handling its
        # frames (handshake.cpp), so the graph bounds the depth and the image is sized from it.
        assert stack["recursion"] == [] and stack["dynamic_frames"] == [], stack
        report = stack_module.report_of(stack)
        assert stack["reserved_bytes"] == stack_module.reserve_bytes(report)
        assert stack["reserved_bytes"] < DEFAULT_STACK[node["mcu"]]


def test_framework_code_does_not_depend_on_the_model(hw_builds: dict[str, HardwareBuild]) -> None:
    """Every layer kind is linked whatever the model (the stage dispatches on the blob's layer
    table), so flash minus the blob is the framework's own size: the same for every node of an
    MCU up to the per-node constants (names, addresses, layer shapes)."""
    code: dict[str, list[int]] = {}
    for build in hw_builds.values():
        for node in build.nodes:
            code.setdefault(node["mcu"], []).append(node["code_bytes"])
    assert set(code) == {"stm32f413zh", "stm32h7a3zi"}
    for mcu, sizes in code.items():
        assert max(sizes) - min(sizes) <= 512, (mcu, sorted(sizes))


def test_an_image_that_does_not_fit_fails_the_build(
    hw_state: Path, hw_builds: dict[str, HardwareBuild], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`validate`'s prediction keeps images that cannot fit from being built at all, so this
    measures the (cached) quickstart image of the F413 against 16 KB of SRAM: the CLI must report
    the node as not fitting, say by how much, and exit 1."""
    from typer.testing import CliRunner

    from nmcm_deploy.cli import app

    assert hw_builds[QUICKSTART.stem].result.code == 0
    real = arm.build_arm_node

    def measured_against_16k(*args: Any, **kwargs: Any) -> arm.ArmImage:
        image = real(*args, **kwargs)
        if image.mcu != "stm32f413zh":
            return image
        profile = profiles.mcu(image.mcu)
        sizes = measure(
            image.elf,
            flash_regions=profile.flash_regions,
            sram_regions=profile.sram_regions,
            flash_capacity=profile.flash_capacity,
            sram_region=profile.arena_region,
            sram_capacity=16 * 1024,
        )
        return dataclasses.replace(image, sizes=sizes)

    monkeypatch.setattr(arm, "build_arm_node", measured_against_16k)
    monkeypatch.setenv("NMCM_STATE_DIR", str(hw_state))
    monkeypatch.setenv("NMCM_FIRMWARE_DIR", str(hw_state / "firmware"))
    result = CliRunner().invoke(
        app, ["build", str(QUICKSTART), "--target", "hardware", "-o", "json"]
    )
    assert result.exit_code == 1, result.output
    f413, h7a3 = json.loads(result.stdout)["nodes"]
    assert not f413["fits"] and h7a3["fits"]
    assert f413["sram_bytes"] > f413["sram_capacity"] == 16 * 1024
    assert f413["shortfall"] == f"SRAM {f413['sram_bytes']:,} B > 16,384 B"
    assert "f413 (stm32f413zh) does not fit: SRAM" in result.stderr


# --- content addressing --------------------------------------------------------------------------


def test_second_build_is_a_cache_hit(hw_state: Path, hw_builds: dict[str, HardwareBuild]) -> None:
    first = hw_builds[QUICKSTART.stem]
    files = [Path(n[k]) for n in first.nodes for k in ("image", "bin", "hex")]
    logs = [Path(n["image"]).with_name("build.log") for n in first.nodes]
    before = {p: p.stat().st_mtime_ns for p in files + logs}

    again = build_hardware(QUICKSTART, hw_state)
    assert [n["image"] for n in again.nodes] == [n["image"] for n in first.nodes]
    assert [n["firmware_sha256"] for n in again.nodes] == [
        n["firmware_sha256"] for n in first.nodes
    ]
    assert not any(n["rebuilt"] for n in again.nodes)
    assert {p: p.stat().st_mtime_ns for p in files + logs} == before  # nothing written
    # Figures unchanged too (read again from the same ELFs).
    assert [n["regions"] for n in again.nodes] == [n["regions"] for n in first.nodes]
    assert again.seconds < first.seconds, (again.seconds, first.seconds)


def test_w5500_wiring_overrides_reach_the_port(hw_state: Path, tmp_path: Path) -> None:
    """A node whose manifest moves the W5500's CS and reset pins is its own image, built with the
    pins as the port's compile definitions (firmware/arm/README.md, "W5500 wiring")."""
    doc = yaml.safe_load(QUICKSTART.read_text())
    doc["spec"]["nodes"][0]["w5500"].update({"cs": "PE11", "reset": "PG9"})  # D5 and D0
    moved = tmp_path / "moved.yaml"
    moved.write_text(yaml.safe_dump(doc, sort_keys=False))
    plain = build_hardware(QUICKSTART, hw_state)
    build = build_hardware(moved, hw_state)

    f413, h7a3 = build.nodes
    assert f413["firmware_sha256"] != plain.nodes[0]["firmware_sha256"]
    assert h7a3["firmware_sha256"] == plain.nodes[1]["firmware_sha256"]  # untouched node
    assert f413["rebuilt"] and not h7a3["rebuilt"]
    configure = Path(f413["image"]).with_name("build.log").read_text()
    assert "-DNMCM_W5500_CS=PE11" in configure and "-DNMCM_W5500_RESET=PG9" in configure
    tree = Path(configure.split(" -B ", 1)[1].split()[0])
    commands = (tree / "compile_commands.json").read_text()
    board = next(
        line for line in commands.splitlines() if "nucleo-f413zh/board.cpp" in line and "-o" in line
    )
    assert "-DNMCM_W5500_CS=PE11" in board and "-DNMCM_W5500_RESET=PG9" in board


# --- elfsize on the smoke images -----------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_elfs(hw_state: Path, hw_builds: dict[str, HardwareBuild]) -> dict[str, Path]:
    """The smoke firmware, built in the same trees as the nodes (its port library is built)."""
    trees: dict[str, Path] = {}
    for build in hw_builds.values():
        for node in build.nodes:
            log = Path(node["image"]).with_name("build.log").read_text()
            trees.setdefault(node["mcu"], Path(log.split(" -B ", 1)[1].split()[0]))
    elfs: dict[str, Path] = {}
    for mcu, tree in trees.items():
        proc = subprocess.run(
            ["cmake", "--build", str(tree), "--target", "smoke", "-j2"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        elfs[mcu] = tree / "apps" / "smoke" / "smoke.elf"
    return elfs


@pytest.mark.parametrize("mcu", ["stm32f413zh", "stm32h7a3zi"])
def test_elfsize_reads_the_smoke_images(smoke_elfs: dict[str, Path], mcu: str) -> None:
    profile = profiles.mcu(mcu)
    sizes = elf_sizes(smoke_elfs[mcu], profile)
    text, data, bss = berkeley(str(smoke_elfs[mcu]))
    assert sizes.flash_bytes == text + data and sizes.sram_total_bytes == data + bss
    assert sizes.blob_bytes == 0 and sizes.code_bytes == sizes.flash_bytes  # no model in it
    assert sizes.fits and not sizes.unplaced
    arena = sizes.region(profile.arena_region)
    assert arena is not None and dict(arena.sections)[".arena"] == 4096  # the smoke's operand
    stack = next(s for s in sizes.sections if s.name == ".stack")
    assert not stack.loaded and stack.size == (16 if mcu == "stm32f413zh" else 32) * 1024


def test_elfsize_says_what_does_not_fit(smoke_elfs: dict[str, Path]) -> None:
    elf = smoke_elfs["stm32f413zh"]
    small = measure(
        elf,
        flash_regions=(MemoryRegion("FLASH", FLASH_ORIGIN, 4096),),
        sram_regions=(MemoryRegion("SRAM", 0x2000_0000, 16 * 1024),),
        flash_capacity=4096,
        sram_region="SRAM",
        sram_capacity=16 * 1024,
    )
    assert not small.fits
    # Bytes beyond the end of a region belong to no region: reported, not silently dropped.
    assert small.unplaced and {r.name for r in small.regions} == {"FLASH", "SRAM"}
    assert "outside every memory region" in small.shortfall()
    # The same image against a profile whose regions are all too small, but it still is there.
    tight = measure(
        elf,
        flash_regions=(MemoryRegion("FLASH", FLASH_ORIGIN, 1536 * 1024),),
        sram_regions=(MemoryRegion("SRAM", 0x2000_0000, 320 * 1024),),
        flash_capacity=1536 * 1024,
        sram_region="SRAM",
        sram_capacity=8 * 1024,  # capacity below what the region holds
    )
    assert not tight.fits and tight.shortfall().startswith("SRAM ")
