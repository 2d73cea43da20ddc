"""The worst stack depth of an image (nmcm_deploy/build/stack.py): call graphs written the way GCC's
-fcallgraph-info=su writes them, then a real ARM image whose deepest path is checked against the
frames the compiler reported for it."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from nmcm_deploy.build import stack


def ci(
    nodes: dict[str, int | None],
    edges: list[tuple[str, str]],
    dynamic: frozenset[str] = frozenset(),
) -> str:
    """A .ci file: a frame per function (None: a function declared, not defined here)."""
    lines = ['graph: { title: "t.cpp"']
    for name, frame in nodes.items():
        if frame is None:
            lines.append(f'node: {{ title: "{name}" label: "{name}\\nt.cpp:1:1" shape : ellipse }}')
        else:
            kind = "dynamic" if name in dynamic else "static"
            lines.append(
                f'node: {{ title: "{name}" label: "{name}\\nt.cpp:1:1\\n{frame} bytes ({kind})" }}'
            )
    if any(target == stack.INDIRECT for _, target in edges):
        lines.append(f'node: {{ title: "{stack.INDIRECT}" label: "Indirect Call Placeholder" }}')
    for source, target in edges:
        lines.append(f'edge: {{ sourcename: "{source}" targetname: "{target}" label: "t.cpp:2" }}')
    lines.append("}")
    return "\n".join(lines) + "\n"


def graph_of(*texts: str) -> stack.CallGraph:
    graph = stack.CallGraph()
    for text in texts:
        graph.add_text(text)
    return graph


def test_the_deepest_path_adds_frames_along_the_calls() -> None:
    text = ci(
        {"Reset_Handler": 8, "main": 16, "a": 100, "b": 40, "c": 200},
        [("Reset_Handler", "main"), ("main", "a"), ("main", "b"), ("b", "c")],
    )
    report = stack.analyse(graph_of(text))
    assert report.worst_bytes == 8 + 16 + 40 + 200
    assert report.path == ("Reset_Handler", "main", "b", "c")
    assert report.recursion == report.unknown == report.indirect_calls == ()


def test_an_exception_handler_adds_its_depth_and_the_frame_the_core_pushes() -> None:
    text = ci(
        {"Reset_Handler": 8, "main": 16, "SysTick_Handler": 24, "HardFault_Handler": 48, "log": 64},
        [("Reset_Handler", "main"), ("HardFault_Handler", "log")],
    )
    report = stack.analyse(graph_of(text))
    assert report.handler_bytes == 48 + 64 + stack.EXCEPTION_FRAME
    assert report.worst_bytes == 8 + 16 + report.handler_bytes


def test_what_the_graph_cannot_say_is_bounded_and_listed() -> None:
    text = ci(
        {
            "Reset_Handler": 8,
            "main": 16,
            "dispatch": 32,
            "kernel_a": 300,  # called only through the pointer
            "kernel_b": 50,
            "memcpy": None,  # the C library: no figure
            "walk": 24,  # recursive
            "grow": 10,
        },
        [
            ("Reset_Handler", "main"),
            ("main", "dispatch"),
            ("dispatch", stack.INDIRECT),
            ("main", "walk"),
            ("walk", "walk"),
            ("kernel_b", "memcpy"),
            ("main", "grow"),
        ],
        dynamic=frozenset({"grow"}),
    )
    report = stack.analyse(graph_of(text))
    assert report.indirect_calls == ("dispatch",)
    # The pointer may reach either kernel: the deeper one (kernel_b with memcpy is 50 + 256).
    assert report.indirect_bound_bytes == max(300, 50 + stack.UNKNOWN_FRAME)
    assert report.worst_bytes == 8 + 16 + 32 + report.indirect_bound_bytes
    assert report.recursion == ("walk",)
    assert report.unknown == ("memcpy",)
    assert report.dynamic == ("grow",)


def test_a_function_in_two_objects_keeps_its_largest_frame() -> None:
    first = ci({"Reset_Handler": 8, "inline_fn": 40}, [("Reset_Handler", "inline_fn")])
    second = ci({"inline_fn": 56}, [])
    assert stack.analyse(graph_of(first, second)).worst_bytes == 8 + 56


def test_aliases_of_a_function_are_one_function() -> None:
    # main declared with an assembler name, a constructor called by its complete-object name.
    caller = ci({"Reset_Handler": 8, "*main": None}, [("Reset_Handler", "*main")])
    main = ci({"main": 24, "_ZN1AC1Ev": None}, [("main", "_ZN1AC1Ev")])
    ctor = ci({"_ZN1AC2Ev": 40}, [])
    report = stack.analyse(graph_of(caller, main, ctor))
    assert report.worst_bytes == 8 + 24 + 40 and report.unknown == ()


def test_a_graph_without_the_entry_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="-fcallgraph-info=su"):
        stack.analyse(graph_of(ci({"main": 8}, [])))


@pytest.mark.parametrize("seed", range(30))
def test_the_bound_is_the_deepest_of_every_path_on_random_acyclic_graphs(seed: int) -> None:
    rng = random.Random(seed)
    names = ["Reset_Handler", *(f"f{i}" for i in range(rng.randint(2, 14)))]
    frames = {n: rng.randint(0, 200) for n in names}
    # Edges only from earlier to later functions: acyclic, every function reachable or not.
    edges = [
        (a, b)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
        if rng.random() < 0.3 and b != "Reset_Handler"
    ]
    calls: dict[str, list[str]] = {}
    for a, b in edges:
        calls.setdefault(a, []).append(b)

    def paths(fn: str) -> list[int]:  # every path's depth, enumerated
        below = [d for callee in calls.get(fn, []) for d in paths(callee)]
        return [frames[fn] + d for d in below] or [frames[fn]]

    report = stack.analyse(graph_of(ci(dict(frames), edges)))
    assert report.worst_bytes == max(paths("Reset_Handler"))
    assert sum(frames[stack_name] for stack_name in report.path) == report.worst_bytes


def test_the_reserve_is_the_worst_path_and_the_stated_margin() -> None:
    text = ci({"Reset_Handler": 1000}, [])
    report = stack.analyse(graph_of(text))
    reserve = stack.reserve_bytes(report)
    assert reserve == 2560  # 1000 + 250 + 1024, rounded up to 512
    assert reserve is not None and reserve % stack.STACK_ALIGN == 0
    assert reserve >= report.worst_bytes * (1 + stack.MARGIN_FRACTION) + stack.MARGIN_BYTES
    looping = stack.analyse(
        graph_of(ci({"Reset_Handler": 8}, [("Reset_Handler", "Reset_Handler")]))
    )
    assert looping.recursion and stack.reserve_bytes(looping) is None  # no bound: no sizing


def test_report_round_trips_through_its_dict() -> None:
    text = ci({"Reset_Handler": 8, "x": None}, [("Reset_Handler", "x")])
    report = stack.analyse(graph_of(text))
    assert stack.report_of(report.as_dict()) == report


@pytest.mark.skipif(shutil.which("arm-none-eabi-g++") is None, reason="needs arm-none-eabi-gcc")
def test_a_real_object_gives_its_frames(tmp_path: Path) -> None:
    source = tmp_path / "t.cpp"
    source.write_text(
        'extern "C" void Reset_Handler();\n'
        "__attribute__((noinline)) int leaf(int x) { volatile int a[20]; a[x] = x; return a[1]; }"
        "\n__attribute__((noinline)) int mid(int x) { volatile int b[40]; b[x] = leaf(x); "
        "return b[2]; }\n"
        'extern "C" void Reset_Handler() { mid(3); }\n'
    )
    subprocess.run(
        ["arm-none-eabi-g++", "-mcpu=cortex-m4", "-mthumb", "-O2", "-fcallgraph-info=su", "-c",
         str(source), "-o", str(tmp_path / "t.o")],
        check=True,
        cwd=tmp_path,
    )  # fmt: skip
    report = stack.image_stack(tmp_path)
    # The path names the functions as the compiler labels them (demangled).
    assert [p.split("(")[0].split()[-1] for p in report.path] == ["Reset_Handler", "mid", "leaf"]
    assert report.worst_bytes >= 40 * 4 + 20 * 4  # the two arrays at least
