"""Throughput of a QEMU node's link: the host link (named pipes through semihosting, joined to a
port by the node's relay) side by side with a CMSDK UART on a socket chardev, the link the
`qemu` target used before.

    python bench/qemu_link.py [--bytes N] [--uart-bytes N]

Builds the smoke firmware for mps2-an386 (Cortex-M4) and mps2-an500 (Cortex-M7), then for each
link sends N random bytes to an image that echoes them, reading the echo as it comes, and prints
the bytes per second of host clock each way (the echo moves every byte twice). The UART moves so
little a second that it gets fewer bytes (--uart-bytes).
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from nmcm_deploy.targets.qemu import RELAY, emulator  # noqa: E402

FIRMWARE = Path(os.environ.get("NMCM_FIRMWARE_DIR", ROOT / "firmware"))
MACHINES = ("mps2-an386", "mps2-an500")
TIMEOUT_S = 600


def build_smoke(directory: Path, machine: str) -> Path:
    toolchain = FIRMWARE / "cmake" / "arm-none-eabi.cmake"
    configure = ["cmake", "-S", str(FIRMWARE / "arm"), "-B", str(directory)]
    configure += [f"-DCMAKE_TOOLCHAIN_FILE={toolchain}", f"-DNMCM_MCU={machine}"]
    for args in (configure, ["cmake", "--build", str(directory), "-j2", "--target", "smoke"]):
        subprocess.run(args, check=True, capture_output=True)
    return directory / "apps" / "smoke" / "smoke.elf"


def qemu(machine: str, elf: Path, *words: str, serial: list[str] | None = None) -> list[str]:
    """The emulator as the qemu target runs it (targets/qemu.py), bounded by ``timeout``."""
    return [
        "timeout",
        str(TIMEOUT_S),
        *emulator(machine, elf, *words),
        *(serial or ["-serial", "null"]),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def connect(port: int, deadline: float) -> socket.socket:
    while True:
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=1.0)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def echo(connection: socket.socket, payload: bytes) -> float:
    """Sends payload while reading its echo; seconds of host clock from the first byte sent to
    the last received. Raises if the echo differs."""
    received = bytearray()
    connection.settimeout(TIMEOUT_S)

    def send() -> None:
        for start in range(0, len(payload), 4096):
            connection.sendall(payload[start : start + 4096])

    start = time.monotonic()
    sender = threading.Thread(target=send)
    sender.start()
    while len(received) < len(payload):
        chunk = connection.recv(1 << 16)
        if not chunk:
            break
        received += chunk
    seconds = time.monotonic() - start
    sender.join()
    if bytes(received) != payload:
        raise SystemExit(f"the echo differs after {len(received)} of {len(payload)} bytes")
    return seconds


def timed_echo(command: list[str], port: int, payload: bytes, done: str) -> float:
    """Runs the echoing image, times the echo through ``port``, checks the image's last word."""
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as p:
        with connect(port, time.monotonic() + 20) as connection:
            seconds = echo(connection, payload)
        output, _ = p.communicate(timeout=30)
    if p.returncode != 0 or f"{done} {len(payload)}" not in output:
        raise SystemExit(f"{done!r} missing: {output[-2000:]}")
    return seconds


def host_link(machine: str, elf: Path, payload: bytes) -> float:
    port = free_port()
    link = Path(tempfile.mkdtemp(prefix="nmcm-link-"))
    command = [sys.executable, str(RELAY), "--link", str(link), "--listen", f"0:{port}", "--"]
    command += qemu(machine, elf, "link-echo", f"bytes={len(payload)}", f"link={link}")
    return timed_echo(command, port, payload, "link echo ok")


def uart(machine: str, elf: Path, payload: bytes) -> float:
    port = free_port()
    chardev = f"socket,id=link,host=127.0.0.1,port={port},server=on,wait=off"
    serial = ["-serial", "null", "-chardev", chardev, "-serial", "chardev:link"]
    command = qemu(machine, elf, "uart-stream", f"bytes={len(payload)}", serial=serial)
    return timed_echo(command, port, payload, "uart echo ok")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bytes", type=int, default=16 << 20)
    parser.add_argument("--uart-bytes", type=int, default=64 << 10)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as folder:
        print(f"{'core':<12} {'link':<28} {'bytes':>10} {'seconds':>8} {'KB/s each way':>14}")
        for machine in MACHINES:
            elf = build_smoke(Path(folder) / machine, machine)
            for name, run, size in (
                ("host link (pipes + relay)", host_link, args.bytes),
                ("UART (socket chardev)", uart, args.uart_bytes),
            ):
                payload = rng.randbytes(size)
                seconds = run(machine, elf, payload)
                rate = size / seconds / 1000
                print(f"{machine:<12} {name:<28} {size:>10} {seconds:>8.2f} {rate:>14,.0f}")
    print("host clock; an echo moves each byte to the node and back")


if __name__ == "__main__":
    main()
