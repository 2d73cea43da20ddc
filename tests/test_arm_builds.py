"""ARM builds: the smoke firmware for the four targets through CMake and the arm-none-eabi toolchain
file, its ELF layout against the MCU profiles, and the QEMU images run under qemu-system-arm.

The toolchain and QEMU are installed by `make setup` (.ci/system-packages.sh): when they are missing
these tests fail, they do not skip. Every build goes to a fresh temporary directory.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from nmcm_deploy import profiles
from nmcm_deploy.targets import qemu as qemu_target

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
TOOLCHAIN_FILE = FIRMWARE / "cmake" / "arm-none-eabi.cmake"
QEMU_TIMEOUT_S = 20

# NMCM_MCU -> (board port, MCU profile it stands for)
TARGETS = {
    "stm32f413zh": ("nucleo-f413zh", "stm32f413zh"),
    "stm32h7a3zi": ("nucleo-h7a3zi-q", "stm32h7a3zi"),
    "mps2-an386": ("qemu-mps2", "stm32f413zh"),
    "mps2-an500": ("qemu-mps2", "stm32h7a3zi"),
}
QEMU_MACHINES = ("mps2-an386", "mps2-an500")
NUCLEO_IRQS = {"stm32f413zh": 102, "stm32h7a3zi": 155}  # RM0430 / RM0455 vector tables
SMOKE_DOT = -114  # the self-test's integer reference (firmware/apps/smoke/main.cpp)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} not found: the ARM tests need gcc-arm-none-eabi, libnewlib-arm-none-eabi,"
            " libstdc++-arm-none-eabi-newlib, qemu-system-arm and cmake (`make setup` installs"
            " them)",
            pytrace=False,
        )
    return path


@dataclass
class Build:
    mcu: str
    board: str
    directory: Path
    log: str

    @property
    def smoke(self) -> Path:
        return self.directory / "apps" / "smoke" / "smoke.elf"


def cmake(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["cmake", *args], capture_output=True, text=True, timeout=240)


def configure_and_build(directory: Path, mcu: str, *extra: str, target: str | None = None) -> str:
    """Configure and build firmware/arm; returns the combined output, fails the test on error."""
    configure = ["-S", str(FIRMWARE / "arm"), "-B", str(directory)]
    configure += [f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAIN_FILE}", f"-DNMCM_MCU={mcu}", *extra]
    build = ["--build", str(directory), "-j2", *(["--target", target] if target else [])]
    output = ""
    for args in (configure, build):
        proc = cmake(*args)
        output += proc.stdout + proc.stderr
        if proc.returncode != 0:
            pytest.fail(f"cmake {' '.join(args)} failed:\n{output[-4000:]}", pytrace=False)
    return output


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Build]:
    for tool in ("cmake", "arm-none-eabi-gcc", "arm-none-eabi-g++", "arm-none-eabi-objcopy"):
        require_tool(tool)
    root = tmp_path_factory.mktemp("arm")

    def one(mcu: str) -> Build:
        directory = root / mcu
        return Build(mcu, TARGETS[mcu][0], directory, configure_and_build(directory, mcu))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return {b.mcu: b for b in pool.map(one, TARGETS)}


def sections(elf_path: Path) -> dict[str, tuple[int, int, int]]:
    """Allocated sections: name -> (address, load address, size)."""
    with elf_path.open("rb") as f:
        elf = ELFFile(f)
        segments = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        result = {}
        for section in elf.iter_sections():
            if not section["sh_flags"] & 0x2 or section["sh_size"] == 0:  # SHF_ALLOC
                continue
            address = section["sh_addr"]
            load = address
            for segment in segments:
                if segment["p_vaddr"] <= address < segment["p_vaddr"] + max(segment["p_memsz"], 1):
                    load = segment["p_paddr"] + address - segment["p_vaddr"]
            result[section.name] = (address, load, section["sh_size"])
        return result


def symbols(elf_path: Path, *names: str) -> dict[str, int]:
    with elf_path.open("rb") as f:
        table = ELFFile(f).get_section_by_name(".symtab")
        return {name: table.get_symbol_by_name(name)[0]["st_value"] for name in names}


def inside(region: profiles.MemoryRegion, address: int, size: int) -> bool:
    return region.origin <= address and address + size <= region.end


# --- builds --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mcu", TARGETS)
def test_build_writes_images_and_prints_sizes(builds: dict[str, Build], mcu: str) -> None:
    build = builds[mcu]
    for suffix in (".elf", ".bin", ".hex", ".map"):
        assert build.smoke.with_suffix(suffix).is_file(), suffix
    assert build.smoke.with_suffix(".bin").stat().st_size > 1024
    assert re.search(r"text\s+data\s+bss\s+dec\s+hex\s+filename", build.log)
    assert "warning:" not in build.log, build.log


@pytest.mark.parametrize("mcu", TARGETS)
def test_cpu_flags_match_the_mcu_profile(builds: dict[str, Build], mcu: str) -> None:
    commands = json.loads((builds[mcu].directory / "compile_commands.json").read_text())
    flags = profiles.mcu(TARGETS[mcu][1]).gcc_flags
    for entry in commands:
        words = entry["command"].split()
        assert all(flag in words for flag in flags), entry["file"]
        assert "-fno-exceptions" in words and "-fno-rtti" in words, entry["file"]


@pytest.mark.parametrize("mcu", ["stm32f413zh", "stm32h7a3zi"])
def test_nucleo_image_layout(builds: dict[str, Build], mcu: str) -> None:
    profile = profiles.mcu(mcu)
    flash = profile.flash_regions[0]
    flash = profiles.MemoryRegion("FLASH", flash.origin, profile.flash_capacity)
    ram = profile.arena if mcu == "stm32f413zh" else profile.region("DTCM")
    elf = builds[mcu].smoke
    found = sections(elf)

    vector_address, _, vector_size = found[".isr_vector"]
    assert vector_address == 0x0800_0000  # where the part boots from flash
    assert vector_size == 4 * (16 + NUCLEO_IRQS[mcu])
    for name in (".isr_vector", ".text", ".rodata"):
        assert inside(flash, found[name][0], found[name][2]), name
    data_address, data_load, data_size = found[".data"]
    assert inside(ram, data_address, data_size) and inside(flash, data_load, data_size)
    for name in (".stack", ".bss"):
        assert inside(ram, found[name][0], found[name][2]), name  # DTCM on the H7A3
    assert inside(profile.arena, found[".arena"][0], found[".arena"][2])  # AXI SRAM on the H7A3

    # The first two words: initial SP (the top of .stack) and Reset_Handler with the Thumb bit.
    with elf.open("rb") as f:
        reader = ELFFile(f)
        words = reader.get_section_by_name(".isr_vector").data()[:8]
    sp, reset = int.from_bytes(words[:4], "little"), int.from_bytes(words[4:], "little")
    known = symbols(elf, "__stack_end__", "__stack_start__", "Reset_Handler")
    assert sp == known["__stack_end__"] and sp % 8 == 0
    assert known["__stack_start__"] == ram.origin  # stack first: an overflow faults
    assert reset == known["Reset_Handler"] | 1


@pytest.mark.parametrize("mcu", QEMU_MACHINES)
def test_qemu_image_layout(builds: dict[str, Build], mcu: str) -> None:
    found = sections(builds[mcu].smoke)
    code_ram = profiles.MemoryRegion("CODE", 0x0, 4 << 20)  # FACTS.md: QEMU's MPS2 memory map
    data_ram = profiles.MemoryRegion("DATA", 0x2000_0000, 4 << 20)
    assert found[".isr_vector"][0] == 0  # QEMU boots from address 0
    for name in (".isr_vector", ".text", ".rodata"):
        assert inside(code_ram, found[name][0], found[name][2]), name
    for name in (".stack", ".data", ".bss", ".arena"):
        assert inside(data_ram, found[name][0], found[name][2]), name


def test_w5500_pin_defaults_are_the_board_profiles() -> None:
    """The ports' compiled-in defaults (board.cpp) equal the YAML board profiles."""
    for board in profiles.board_names():
        source = (FIRMWARE / "ports" / board / "board.cpp").read_text()
        defaults = dict(re.findall(r"#define NMCM_W5500_(SPI|CS|RESET) (\w+)", source))
        w5500 = profiles.board(board).w5500
        assert defaults == {"SPI": w5500.spi, "CS": w5500.cs, "RESET": w5500.reset}, board


def test_w5500_pin_override_builds_and_a_bad_pin_fails(tmp_path: Path) -> None:
    require_tool("arm-none-eabi-gcc")
    port = "nmcm_port_nucleo_f413zh"
    options = ["-DNMCM_MCU=stm32f413zh", "-DNMCM_BUILD_CORE=OFF"]
    configure_and_build(
        tmp_path / "ok", "stm32f413zh", *options[1:], "-DNMCM_W5500_CS=PE11", target=port
    )

    bad = str(tmp_path / "bad")
    configured = cmake("-S", str(FIRMWARE / "arm"), "-B", bad, *options, "-DNMCM_W5500_CS=PZ3")
    assert configured.returncode == 0, configured.stderr
    built = cmake("--build", bad, "--target", port)
    assert built.returncode != 0
    assert "NMCM_W5500_CS must name a pin" in built.stdout + built.stderr


PORTABLE_LIBRARIES = {  # firmware/arm builds these for the target, warnings as errors
    "core": "core/libnmcm_core.a",
    "net": "net/libnmcm_net.a",
    "w5500": "drivers/w5500/libnmcm_w5500.a",
}


@pytest.mark.parametrize("mcu", TARGETS)
def test_portable_libraries_link_for_the_target(builds: dict[str, Build], mcu: str) -> None:
    """firmware/core, firmware/net and the W5500 driver compile for the target, link whole (every
    object, no --gc-sections) into link_check.elf, and refer to no heap, exception or RTTI symbol
    (firmware/tests/check_core_symbols.cmake)."""
    directory = builds[mcu].directory
    assert (directory / "link_check.elf").is_file()
    for name, archive in PORTABLE_LIBRARIES.items():
        proc = cmake(
            f"-DLIBRARY={directory / archive}",
            "-DNM=arm-none-eabi-nm",
            "-P",
            str(FIRMWARE / "tests" / "check_core_symbols.cmake"),
        )
        assert proc.returncode == 0, f"{name}: {proc.stdout}{proc.stderr}"


# --- QEMU ----------------------------------------------------------------------------------------


def qemu_command(
    machine: str, elf: Path, *words: str, serial: list[str] | None = None
) -> list[str]:
    semihosting = ",".join(
        ["enable=on", "target=native", f"arg={elf.name}", *map("arg={}".format, words)]
    )
    return [
        "timeout",
        str(QEMU_TIMEOUT_S),
        require_tool("qemu-system-arm"),
        "-M",
        machine,
        "-nographic",
        "-monitor",
        "none",
        "-icount",
        "shift=0,sleep=off",
        "-semihosting-config",
        semihosting,
        *(serial or []),
        "-kernel",
        str(elf),
    ]


def run_qemu(machine: str, elf: Path, *words: str) -> subprocess.CompletedProcess[str]:
    """Runs to the end; stdout and stderr merged (semihosting output goes to QEMU's stderr)."""
    return subprocess.run(
        qemu_command(machine, elf, *words),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=QEMU_TIMEOUT_S + 10,
    )


@contextmanager
def started_qemu(command: list[str]) -> Iterator[subprocess.Popen[str]]:
    """A QEMU in the background, output merged on stdout; killed if the test leaves early."""
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            # SIGTERM, not SIGKILL: `timeout` passes it on to QEMU; killed, it would leave QEMU
            # running and holding the output pipe open.
            process.terminate()
            try:
                process.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                raise


def finish(process: subprocess.Popen[str]) -> str:
    output, _ = process.communicate(timeout=QEMU_TIMEOUT_S + 10)
    return output


def instruction_counts(log: str) -> tuple[int, int]:
    """The smoke log's two figures: one dot product, and the same 400 times."""
    single = re.search(r"selftest dot1024 = .* instructions (\d+)", log)
    repeated = re.search(r"selftest dot1024 x400 .*instructions (\d+)", log)
    assert single and repeated, log
    return int(single.group(1)), int(repeated.group(1))


@pytest.mark.parametrize("machine", QEMU_MACHINES)
def test_qemu_smoke(builds: dict[str, Build], machine: str) -> None:
    proc = run_qemu(machine, builds[machine].smoke)
    log = proc.stdout
    assert proc.returncode == 0, log
    lines = log.splitlines()
    assert "nmcm qemu-mps2 up" in lines
    assert f"selftest dot1024 = {SMOKE_DOT} (expected {SMOKE_DOT})" in log
    assert lines[-1] == "smoke ok"
    single, repeated = instruction_counts(log)
    # 1024 multiply-accumulates: 5 instructions each as gcc 12 compiles the loop here (FACTS.md:
    # ~7 for a naive loop), plus the call, the counter's reads and one SysTick tick (40
    # instructions) of resolution.
    assert 4 * 1024 <= single <= 8 * 1024 + 200, log
    # 400 calls span two SysTick periods and more: a lost or doubled wrap would be off by a whole
    # period (a million instructions); the tolerance covers the single figure's resolution and the
    # per-call overhead.
    assert abs(repeated - 400 * single) <= 400 * 80, log
    # -icount makes the counts deterministic.
    assert instruction_counts(run_qemu(machine, builds[machine].smoke).stdout) == (single, repeated)


def test_qemu_fault_is_reported_and_exits_non_zero(builds: dict[str, Build]) -> None:
    proc = run_qemu("mps2-an386", builds["mps2-an386"].smoke, "fault")
    assert proc.returncode == 1, proc.stdout
    fatal = proc.stdout.splitlines()[-1]
    assert fatal.startswith("fatal: UsageFault pc=0x"), proc.stdout
    assert "cfsr=0x02000000" in fatal  # UFSR.DIVBYZERO: the trap enabled at reset


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def uart1_on(chardev: str) -> list[str]:
    return ["-serial", "null", "-chardev", chardev, "-serial", "chardev:link"]


@pytest.mark.parametrize("machine", QEMU_MACHINES)
def test_qemu_uart_stream_with_an_echo_peer(builds: dict[str, Build], machine: str) -> None:
    """UART1 on a client socket chardev: the firmware's bytes reach the host and come back."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        chardev = f"socket,id=link,host=127.0.0.1,port={port}"
        command = qemu_command(
            machine, builds[machine].smoke, "uart-echo", serial=uart1_on(chardev)
        )
        with started_qemu(command) as qemu:
            server.settimeout(QEMU_TIMEOUT_S)
            connection, _ = server.accept()
            with connection:
                connection.settimeout(QEMU_TIMEOUT_S)
                received = b""
                while len(received) < 9:
                    chunk = connection.recv(64)
                    if not chunk:
                        break
                    received += chunk
                assert received == b"nmcm-ping"
                connection.sendall(received)
                output = finish(qemu)
    assert qemu.returncode == 0, output
    assert "uart1 echo ok" in output.splitlines()


def test_qemu_two_nodes_m4_and_m7_exchange_bytes(builds: dict[str, Build], free_port: int) -> None:
    """Two QEMU nodes, Cortex-M4 and Cortex-M7, joined UART1 to UART1 by a socket chardev: each
    sends its ping and receives the other's."""
    address = f"host=127.0.0.1,port={free_port}"
    server_command = qemu_command(
        "mps2-an386",
        builds["mps2-an386"].smoke,
        "uart-echo",
        serial=uart1_on(f"socket,id=link,{address},server=on,wait=on"),
    )
    client_command = qemu_command(
        "mps2-an500",
        builds["mps2-an500"].smoke,
        "uart-echo",
        serial=uart1_on(f"socket,id=link,{address}"),
    )
    with started_qemu(server_command) as server:
        # The server waits for its client before running the guest, and says when it listens.
        assert server.stdout is not None
        first = server.stdout.readline()
        assert "waiting for connection" in first, first
        with started_qemu(client_command) as client:
            outputs = {"server": first + finish(server), "client": finish(client)}
    for name, process in (("server", server), ("client", client)):
        assert process.returncode == 0, outputs[name]
        assert "uart1 echo ok" in outputs[name].splitlines(), outputs[name]


@pytest.mark.parametrize("machine", QEMU_MACHINES)
def test_qemu_host_link_echoes_through_the_relay(
    builds: dict[str, Build], machine: str, free_port: int, tmp_path: Path
) -> None:
    """The host link (named pipes through semihosting, nmcm/port/host_link.h) and the node's relay
    (qemu_relay.py): a MiB of random bytes sent to stream 0 in chunks of random sizes comes back
    whole and in order, as the node's streams carry frames."""
    rng = random.Random(machine)
    payload = rng.randbytes(1 << 20)
    link = tmp_path / "link"
    relay = [sys.executable, str(qemu_target.RELAY), "--link", str(link)]
    relay += ["--listen", f"0:{free_port}", "--"]
    words = ("link-echo", f"bytes={len(payload)}", f"link={link}")
    with started_qemu(relay + qemu_command(machine, builds[machine].smoke, *words)) as node:
        deadline = time.monotonic() + QEMU_TIMEOUT_S
        while True:  # until the relay listens
            try:
                connection = socket.create_connection(("127.0.0.1", free_port), timeout=1.0)
                break
            except OSError:
                assert node.poll() is None and time.monotonic() < deadline, finish(node)
                time.sleep(0.05)
        with connection:
            connection.settimeout(QEMU_TIMEOUT_S)

            def send() -> None:
                at = 0
                while at < len(payload):
                    size = rng.randint(1, 9000)
                    connection.sendall(payload[at : at + size])
                    at += size

            sender = threading.Thread(target=send)
            sender.start()
            received = bytearray()
            while len(received) < len(payload):
                chunk = connection.recv(1 << 16)
                if not chunk:
                    break
                received += chunk
            sender.join()
        output = finish(node)
    assert node.returncode == 0, output
    assert f"link echo ok {len(payload)}" in output.splitlines()
    assert bytes(received) == payload
    assert not link.exists()  # the relay removes its pipes when QEMU ends


def test_f413_image_boots_on_qemu_stm32f405(builds: dict[str, Build]) -> None:
    """The NUCLEO-F413ZH image itself on QEMU's netduinoplus2, an STM32F405 (FACTS.md): the same
    flash and SRAM addresses, the same USART3 at the same address, an RCC that never reports ready.
    So this runs the real startup from 0x08000000, the clock setup's timeouts and HSI fallback, and
    the F4 USART log, which reaches QEMU's third serial port. The board halts after main, so the
    test stops QEMU once the last line is out."""
    command = qemu_command("netduinoplus2", builds["stm32f413zh"].smoke)
    # No semihosting and no -icount on this board: keep the machine, kernel and serial ports.
    command = [
        *command[:3],
        "-M",
        "netduinoplus2",
        "-nographic",
        "-monitor",
        "none",
        *("-serial", "null", "-serial", "null", "-serial", "stdio"),
        "-kernel",
        str(builds["stm32f413zh"].smoke),
    ]
    lines: list[str] = []
    with started_qemu(command) as qemu:
        assert qemu.stdout is not None
        for line in qemu.stdout:
            lines.append(line.rstrip("\r\n"))
            if line.startswith(("main returned", "fatal:")):
                break
    assert lines[0].startswith("nucleo-f413zh: sysclk 16000000 Hz (PLL setup failed"), lines
    assert "nmcm nucleo-f413zh up" in lines
    assert f"selftest dot1024 = {SMOKE_DOT} (expected {SMOKE_DOT}) cycles 0" in lines
    assert lines[-2:] == ["smoke ok", "main returned 0"], lines
