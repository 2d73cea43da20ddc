"""nmcm_deploy/build/mapfile.py: a GNU ld map summed per module and output section. The real maps
of the board images are checked against their ELFs in test_hardware_builds.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from nmcm_deploy.build.mapfile import BALANCE, module_of, module_sizes

CORE = "core/libnmcm_core.a(conv2d.cpp.obj)"
LIBC = "/usr/lib/arm-none-eabi/lib/thumb/v7e-m+fp/hard/libc_nano.a(lib_a-memcpy.o)"
APP = "apps/node-board/CMakeFiles/nmcm_node_board.dir/main_board.cpp.obj"
BLOB = "apps/node-board/CMakeFiles/nmcm-node-board.dir/stage_blob.S.obj"
PORT = "ports/nucleo-f413zh/libnmcm_port_nucleo_f413zh.a(board.cpp.obj)"

MAP = f"""Archive member included to satisfy reference by file (symbol)

Discarded input sections

 .text._ZN4nmcm6unusedEv
                0x00000000       0x40 {CORE}

Memory Configuration

Linker script and memory map

.isr_vector     0x08000000      0x1d8
 .isr_vector    0x08000000      0x1d8 {PORT}
                0x08000000                nmcm_vectors

.text           0x080001d8      0x200
 *(.text .text.* .gnu.linkonce.t.*)
 .text._ZN4nmcm14conv2d_forwardEPf
                0x080001d8      0x100 {CORE}
                0x080001d8                nmcm::conv2d_forward(float*)
 .text          0x080002d8       0x7c {LIBC}
 *fill*         0x08000354        0x4
 .text.main     0x08000358       0x80 {APP}

.ARM.extab
 *(.ARM.extab* .gnu.linkonce.armextab.*)

.rodata
                0x080003d8       0x40
 .rodata.nmcm_stage_blob
                0x080003d8       0x30 {BLOB}
 .rodata._ZN4nmcm6kTableE
                0x08000408       0x10 {CORE}

.stack          0x20000000     0x1c00
 .stack         0x20000000     0x1c00 {APP}

.data           0x20001c00       0x20 load address 0x08000418
 .data._ZN12_GLOBAL__N_18g_configE
                0x20001c00       0x20 {APP}

.bss            0x20001c20       0x30
 .bss._ZN4mainE4node
                0x20001c20       0x28 {APP}
 COMMON         0x20001c48        0x8 {LIBC}

.arena          0x20002000     0x8000
 .arena         0x20002000     0x8000 {APP}

.debug_info     0x00000000     0x5000
 .debug_info    0x00000000     0x5000 {CORE}
"""


def test_sections_are_summed_per_module_and_kind(tmp_path: Path) -> None:
    path = tmp_path / "image.map"
    path.write_text(MAP)
    sizes = {m.module: m for m in module_sizes(path)}
    assert set(sizes) == {
        "core (layers, stage, blob)",
        "newlib (libc)",
        "app (nmcm_node_board)",
        "stage blob",
        "port (nucleo_f413zh)",
        BALANCE,
    }
    # The rows add up to the output sections: the 4 bytes of fill in .text are the balance's.
    balance = sizes[BALANCE]
    assert (balance.text, balance.rodata, balance.data, balance.bss) == (4, 0, 0, 0)
    rows = module_sizes(path)
    assert sum(m.flash_bytes for m in rows) == 0x1D8 + 0x200 + 0x40 + 0x20
    assert sum(m.sram_bytes for m in rows) == 0x20 + 0x30
    assert rows[-1].module == BALANCE
    core = sizes["core (layers, stage, blob)"]
    # The discarded section and the debug information count for nothing.
    assert (core.text, core.rodata, core.data, core.bss) == (0x100, 0x10, 0, 0)
    libc = sizes["newlib (libc)"]
    assert (libc.text, libc.bss) == (0x7C, 0x8)  # COMMON symbols are .bss
    app = sizes["app (nmcm_node_board)"]
    # .data costs flash (its initial values) and SRAM; the stack and the arena are not counted.
    assert (app.text, app.data, app.bss) == (0x80, 0x20, 0x28)
    assert (app.flash_bytes, app.sram_bytes) == (0x80 + 0x20, 0x20 + 0x28)
    assert sizes["stage blob"].rodata == 0x30
    assert sizes["port (nucleo_f413zh)"].text == 0x1D8
    # Largest flash first, the balance last.
    flash = [m.flash_bytes for m in rows[:-1]]
    assert flash == sorted(flash, reverse=True)


def test_constants_merged_across_objects_make_a_negative_balance(tmp_path: Path) -> None:
    """The linker keeps one copy of a string two objects both hold: their input sections say
    more than the output section has, and the balance row gives the difference back."""
    table = f" .rodata._ZN4nmcm6kTableE\n                0x08000408       0x10 {CORE}\n"
    assert table in MAP
    strings = f" .rodata.str1.4\n                0x08000418       0x18 {LIBC}\n"
    path = tmp_path / "image.map"
    path.write_text(MAP.replace(table, table + strings))
    rows = module_sizes(path)
    assert rows[-1].module == BALANCE and rows[-1].rodata == -0x18
    assert sum(m.flash_bytes for m in rows) == 0x1D8 + 0x200 + 0x40 + 0x20


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("runtime/libnmcm_runtime.a(node.cpp.obj)", "runtime (node)"),
        ("drivers/w5500/libnmcm_w5500.a(socket.cpp.obj)", "driver: W5500"),
        ("/usr/lib/gcc/arm-none-eabi/12.2.1/thumb/v7e-m+fp/hard/libgcc.a(_udivmoddi4.o)", "libgcc"),
        ("/x/libm.a(lib_a-ef_log.o)", "newlib (libm)"),
        ("/x/thumb/v7e-m+fp/hard/crti.o", "startup (crt)"),
        (
            "apps/calibrate-qemu/CMakeFiles/nmcm-calibrate-qemu.dir/main.cpp.obj",
            "app (nmcm-calibrate-qemu)",
        ),
    ],
)
def test_objects_are_named_by_their_module(source: str, module: str) -> None:
    assert module_of(source) == module


def test_a_file_that_is_no_map_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "image.map"
    path.write_text("not a map\n")
    with pytest.raises(ValueError, match="not a GNU ld map"):
        module_sizes(path)
