"""Semantic checks: what JSON Schema cannot say about a manifest.

Uniqueness across nodes, addresses inside the subnet, known MCUs and boards, stages that tile the
model, layer shapes, files that exist, and whether each stage fits its MCU's memory.

The checks run even when the schema found problems, so a user sees everything at once; each check
reads the raw data defensively and skips any part of the document the schema already flagged
(``dirty`` paths), so one mistake is not reported twice and malformed data never raises.
"""

from __future__ import annotations

import ast
import difflib
import ipaddress
import math
import zipfile
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmcm_deploy import profiles
from nmcm_deploy.compiler.blob_layout import blob_size
from nmcm_deploy.compiler.cluster import micro_batch_size, predict_fit
from nmcm_deploy.compiler.inline import inline_ir
from nmcm_deploy.compiler.ir import ModelIR
from nmcm_deploy.compiler.memory import MemoryPlan, plan_stage
from nmcm_deploy.errors import ModelError, Problem
from nmcm_deploy.manifest.loader import (
    LoadedYaml,
    Segment,
    format_path,
    parse_path,
    resolve_path,
)

MAX_PORT = 65535
MAX_SOURCE_BYTES = 1 << 20
DIGITS_INPUTS = ([1, 8, 8], [64])  # sklearn's digits: 8x8 grey images, or their 64 pixels
DIGITS_CLASSES = 10

Where = tuple[Segment, ...]


def semantic_problems(doc: LoadedYaml, dirty: Collection[str] = ()) -> list[Problem]:
    """Every semantic problem of a loaded manifest. ``dirty``: paths that already have a problem."""
    if not isinstance(doc.data, dict):
        return []
    ctx = _Context(doc, set(dirty))
    _check_nodes(ctx)
    _check_network(ctx)
    _check_target(ctx)
    _check_profiles(ctx)
    _check_training(ctx)
    ir = _check_model(ctx)
    stages_ok = _check_stages(ctx, ir)
    _check_files(ctx)
    if ir is not None and stages_ok:
        _check_fit(ctx, ir)
    return ctx.problems


# --- plumbing --------------------------------------------------------------------------------


@dataclass
class _Context:
    doc: LoadedYaml
    dirty: set[str]
    problems: list[Problem] = field(default_factory=list)

    @property
    def spec(self) -> dict[str, Any]:
        return _dict(_dict(self.doc.data).get("spec"))

    def get(self, *segments: Segment) -> Any:
        value: Any = self.doc.data
        for seg in segments:
            if isinstance(seg, int) and isinstance(value, list) and 0 <= seg < len(value):
                value = value[seg]
            elif isinstance(seg, str) and isinstance(value, dict):
                value = value.get(seg)
            else:
                return None
        return value

    def clean(self, *segments: Segment) -> bool:
        """No problem was reported at or below ``segments``."""
        prefix = format_path(segments)
        if not prefix:
            return not self.dirty
        return not any(
            p == prefix or p.startswith((prefix + ".", prefix + "[")) for p in self.dirty
        )

    def line(self, *segments: Segment) -> int:
        return self.doc.locations.line_of(segments)

    def add(self, segments: Sequence[Segment], message: str, *, at_key: bool = False) -> None:
        location = self.doc.locations.locate(tuple(segments), at_key=at_key)
        self.problems.append(Problem(location, message))
        self.dirty.add(location.path)

    def nodes(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for i, node in enumerate(_list(self.spec.get("nodes"))):
            if isinstance(node, dict):
                yield i, node


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _ip(value: Any) -> ipaddress.IPv4Address | None:
    if not isinstance(value, str):
        return None
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        return None


def _span(first: int, last: int) -> str:
    return f"layer {first}" if first == last else f"layers {first}..{last}"


def _did_you_mean(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# --- nodes and network -----------------------------------------------------------------------


def _check_nodes(ctx: _Context) -> None:
    """Names, IPs, MACs and probe UIDs are unique; MACs are usable unicast addresses."""
    seen: dict[str, dict[str, int]] = {"name": {}, "ip": {}, "mac": {}, "uid": {}}
    labels = {"name": "node name", "ip": "IP address", "mac": "MAC address", "uid": "probe UID"}

    def unique(kind: str, key: str, segments: Where, shown: str) -> None:
        if key in seen[kind]:
            first = seen[kind][key]
            ctx.add(segments, f"duplicate {labels[kind]} {shown} (first used at line {first})")
        else:
            seen[kind][key] = ctx.line(*segments)

    for i, node in ctx.nodes():
        base: Where = ("spec", "nodes", i)
        name = _str(node.get("name"))
        if name is not None and ctx.clean(*base, "name"):
            unique("name", name, (*base, "name"), repr(name))
        w5500 = _dict(node.get("w5500"))
        ip = _ip(w5500.get("ip"))
        if ip is not None and ctx.clean(*base, "w5500", "ip"):
            unique("ip", str(ip), (*base, "w5500", "ip"), str(ip))
        mac = _str(w5500.get("mac"))
        if mac is not None and ctx.clean(*base, "w5500", "mac"):
            unique("mac", mac.lower(), (*base, "w5500", "mac"), mac)
            _check_mac(ctx, (*base, "w5500", "mac"), mac)
        uid = _str(_dict(node.get("probe")).get("uid"))
        if uid is not None and ctx.clean(*base, "probe", "uid"):
            unique("uid", uid.upper(), (*base, "probe", "uid"), repr(uid))


def _check_mac(ctx: _Context, segments: Where, mac: str) -> None:
    octets = mac.split(":")
    try:
        first = int(octets[0], 16)
    except ValueError:
        return
    if all(o == "00" for o in octets):
        ctx.add(segments, f"{mac} is the all-zero MAC address; use e.g. 02:4e:4d:00:00:01")
    elif first & 1:
        ctx.add(
            segments,
            f"{mac} is a multicast MAC address (lowest bit of the first byte set); a node needs "
            "a unicast one, e.g. 02:4e:4d:00:00:01 (locally administered)",
        )


def _check_network(ctx: _Context) -> None:
    """Addresses are inside the subnet, not its network or broadcast address, and distinct."""
    net = _dict(ctx.spec.get("network"))
    base: Where = ("spec", "network")
    subnet: ipaddress.IPv4Network | None = None
    text = _str(net.get("subnet"))
    if text is not None and ctx.clean(*base, "subnet"):
        try:
            subnet = ipaddress.IPv4Network(text, strict=True)
        except ValueError:
            try:
                subnet = ipaddress.IPv4Network(text, strict=False)
            except ValueError:
                ctx.add((*base, "subnet"), f"{text!r} is not an IPv4 subnet")
            else:
                ctx.add(
                    (*base, "subnet"),
                    f"{text} has host bits set; did you mean {subnet.with_prefixlen}?",
                )
                subnet = None

    addresses: list[tuple[Where, str, ipaddress.IPv4Address]] = []
    for key in ("gateway", "coordinator"):
        ip = _ip(net.get(key))
        if ip is not None and ctx.clean(*base, key):
            addresses.append(((*base, key), key, ip))
    for i, node in ctx.nodes():
        segments: Where = ("spec", "nodes", i, "w5500", "ip")
        ip = _ip(_dict(node.get("w5500")).get("ip"))
        if ip is not None and ctx.clean(*segments):
            label = f"node {node.get('name')!r}" if _str(node.get("name")) else f"node {i}"
            addresses.append((segments, label, ip))

    for segments, label, ip in addresses:
        if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip == _BROADCAST:
            ctx.add(segments, f"{ip} cannot be the address of a {label.split()[0]} on Ethernet")
            continue
        if subnet is None:
            continue
        if ip not in subnet:
            ctx.add(segments, f"{ip} ({label}) is outside network.subnet {subnet.with_prefixlen}")
        elif subnet.prefixlen < 31 and ip == subnet.network_address:
            ctx.add(segments, f"{ip} is the network address of {subnet.with_prefixlen}")
        elif subnet.prefixlen < 31 and ip == subnet.broadcast_address:
            ctx.add(segments, f"{ip} is the broadcast address of {subnet.with_prefixlen}")

    # A node must not take the gateway's or the coordinator's address. The gateway and the
    # coordinator may be the same machine (a laptop routing a lab switch), so that is allowed.
    infra = {
        ip: (label, segments) for segments, label, ip in addresses if not label.startswith("node")
    }
    for segments, label, ip in addresses:
        if label.startswith("node") and ip in infra:
            other, where = infra[ip]
            ctx.add(segments, f"{ip} is also the {other}'s address (line {ctx.line(*where)})")

    # Node i (in stage order) listens on port + i (compiler/cluster.py's node_network).
    port = _int(net.get("port"))
    count = len(_list(ctx.spec.get("nodes")))
    if port is not None and ctx.clean(*base, "port") and port + count - 1 > MAX_PORT:
        ctx.add(
            (*base, "port"),
            f"port {port} leaves no room for {count} node(s): they listen on ports "
            f"{port}..{port + count - 1}, and the highest TCP port is {MAX_PORT}",
        )


_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


def _check_target(ctx: _Context) -> None:
    """On hardware the network, the W5500s, the boards and (with several boards) the probes
    must all be given; sim and qemu need none of them."""
    if ctx.spec.get("target") != "hardware" or not ctx.clean("spec", "target"):
        return
    net = ctx.spec.get("network")
    for key in ("subnet", "coordinator"):
        if isinstance(net, dict) and key not in net:
            ctx.add(("spec", "network"), f"target hardware needs network.{key}", at_key=True)
    if net is None:
        ctx.add(("spec",), "target hardware needs spec.network (subnet, coordinator)", at_key=True)
    several = len(_list(ctx.spec.get("nodes"))) > 1
    for i, node in ctx.nodes():
        base: Where = ("spec", "nodes", i)
        if "w5500" not in node:
            ctx.add(base, "target hardware needs w5500: {ip, mac} on every node")
        if "board" not in node:
            ctx.add(base, "target hardware needs the node's board (its pins come from the board)")
        if several and "probe" not in node:
            ctx.add(base, "target hardware with several nodes needs probe.uid to tell them apart")


def _check_profiles(ctx: _Context) -> None:
    """MCUs and boards are ones nmcm has profiles for, boards carry the node's MCU, and W5500 pin
    overrides do not collide with each other or the board's SPI and log UART pins."""
    mcus, boards = profiles.mcu_names(), profiles.board_names()
    for i, node in ctx.nodes():
        base: Where = ("spec", "nodes", i)
        mcu = _str(node.get("mcu"))
        if mcu is not None and ctx.clean(*base, "mcu") and mcu not in mcus:
            ctx.add(
                (*base, "mcu"),
                f"unknown MCU {mcu!r}{_did_you_mean(mcu, mcus)} (known: {', '.join(mcus)})",
            )
            mcu = None
        name = _str(node.get("board"))
        if name is None or not ctx.clean(*base, "board"):
            continue
        if name not in boards:
            ctx.add(
                (*base, "board"),
                f"unknown board {name!r}{_did_you_mean(name, boards)} (known: {', '.join(boards)})",
            )
            continue
        board = profiles.board(name)
        if mcu is not None and board.mcu != mcu:
            ctx.add((*base, "board"), f"board {name} carries the {board.mcu}, not the {mcu}")
        w5500 = _dict(node.get("w5500"))
        if ctx.clean(*base, "w5500"):
            _check_pins(ctx, (*base, "w5500"), w5500, board)


def _check_pins(
    ctx: _Context, base: Where, w5500: dict[str, Any], board: profiles.BoardProfile
) -> None:
    taken = {
        board.w5500.sck: "SPI SCK",
        board.w5500.miso: "SPI MISO",
        board.w5500.mosi: "SPI MOSI",
        board.log_uart.tx: "log UART TX",
        board.log_uart.rx: "log UART RX",
    }
    cs = _str(w5500.get("cs")) or board.w5500.cs
    reset = _str(w5500.get("reset")) or board.w5500.reset
    for key, pin in (("cs", cs), ("reset", reset)):
        if key in w5500 and pin in taken:
            ctx.add((*base, key), f"{pin} is the {board.name}'s {taken[pin]} pin")
    if cs == reset:
        key = "reset" if "reset" in w5500 else "cs"
        ctx.add((*base, key), f"cs and reset are the same pin {cs}")


# --- training, model, stages -----------------------------------------------------------------


def _check_training(ctx: _Context) -> None:
    training = _dict(ctx.spec.get("training"))
    batch = _int(training.get("batch_size"))
    micro = _int(training.get("micro_batches"))
    base: Where = ("spec", "training")
    if (
        batch is not None
        and micro is not None
        and micro > batch
        and ctx.clean(*base, "batch_size")
        and ctx.clean(*base, "micro_batches")
    ):
        ctx.add(
            (*base, "micro_batches"),
            f"micro_batches {micro} is larger than batch_size {batch}: "
            "every micro-batch needs at least one sample",
        )


def _check_model(ctx: _Context) -> ModelIR | None:
    """Shapes of an inline model, and whether the dataset and the loss fit its input and output.
    Returns the IR when the model is inline and sound."""
    model = _dict(ctx.spec.get("model"))
    if "layers" not in model or "source" in model or not ctx.clean("spec", "model"):
        return None
    input_shape = _list(model.get("input"))
    try:
        ir = inline_ir(input_shape, _list(model.get("layers")))
    except ModelError as exc:
        where = exc.where or "spec.model"
        message = exc.message.removeprefix(f"{exc.where}: ") if exc.where else exc.message
        if exc.hint:
            message += f"; {exc.hint}"
        ctx.add(parse_path(where), message)
        return None

    dataset = _dict(ctx.spec.get("dataset"))
    if dataset.get("name") == "sklearn-digits" and ctx.clean("spec", "dataset", "name"):
        if input_shape not in DIGITS_INPUTS:
            ctx.add(
                ("spec", "model", "input"),
                f"sklearn-digits samples are 8x8 grey images: input must be [1, 8, 8] or [64], "
                f"not {input_shape}",
            )
        elif len(ir.output_shape) == 1 and ir.output_shape[0] < DIGITS_CLASSES:
            ctx.add(
                ("spec", "model", "layers", len(ir.layers) - 1),
                f"sklearn-digits has {DIGITS_CLASSES} classes but the model outputs "
                f"{ir.output_shape[0]} values",
            )
    if len(ir.output_shape) != 1:
        ctx.add(
            ("spec", "model", "layers", len(ir.layers) - 1),
            f"the model's output has shape {list(ir.output_shape)}, but the loss needs one value "
            "per class: end the model with {type: flatten} and {type: linear}",
        )
    return ir


def _check_stages(ctx: _Context, ir: ModelIR | None) -> bool:
    """Stages name known nodes once each and tile the layers 0..n-1 in order. True when the stages
    are "auto" or a list sound enough to plan memory for."""
    stages = ctx.spec.get("stages", "auto")
    if not ctx.clean("spec", "stages"):
        return False
    if not isinstance(stages, list):
        return stages == "auto"
    model = _dict(ctx.spec.get("model"))
    count = len(ir.layers) if ir is not None else None
    if count is None and "layers" in model and ctx.clean("spec", "model", "layers"):
        count = len(_list(model.get("layers")))  # still known when shapes are wrong
    names = [n for _, node in ctx.nodes() if (n := _str(node.get("name"))) is not None]
    # With a node name the schema rejected, "unknown node" would only repeat that problem.
    names_known = all(ctx.clean("spec", "nodes", i, "name") for i, _ in ctx.nodes())
    before = len(ctx.problems)
    used: dict[str, int] = {}
    backwards = False
    end = -1  # last layer covered so far
    for i, stage in enumerate(stages):
        base: Where = ("spec", "stages", i)
        node = _str(_dict(stage).get("node"))
        if node is not None and node not in names and names_known:
            ctx.add(
                (*base, "node"),
                f"unknown node {node!r}{_did_you_mean(node, names)} (nodes: {', '.join(names)})",
            )
        elif node is not None and node in used:
            ctx.add(
                (*base, "node"),
                f"node {node!r} already runs stage {used[node]} (line "
                f"{ctx.line('spec', 'stages', used[node])}); a node runs one stage",
            )
        elif node is not None:
            used[node] = i
        span = _list(_dict(stage).get("layers"))
        if len(span) != 2 or _int(span[0]) is None or _int(span[1]) is None:
            return False
        first, last = int(span[0]), int(span[1])
        where: Where = (*base, "layers")
        if first > last:
            ctx.add(where, f"runs backwards: first layer {first} is after last layer {last}")
            backwards = True
            continue
        if count is not None and last >= count:
            ctx.add(
                where,
                f"layer {last} is out of range: the model has {count} layers, 0..{count - 1}",
            )
        if first > end + 1:
            if i == 0:
                ctx.add(where, f"the first stage must start at layer 0, not {first}")
            else:
                ctx.add(where, f"gap: no stage runs {_span(end + 1, first - 1)}")
        elif first <= end:
            ctx.add(
                where,
                f"overlaps the stage before, which already runs {_span(first, min(last, end))}",
            )
        end = max(end, last)
    if count is not None and end < count - 1 and stages and not backwards:
        ctx.add(
            ("spec", "stages", len(stages) - 1, "layers"),
            f"no stage runs {_span(end + 1, count - 1)}: the last stage must end at layer "
            f"{count - 1}",
        )
    return len(ctx.problems) == before


# --- files -----------------------------------------------------------------------------------


def _check_files(ctx: _Context) -> None:
    """Files the manifest names exist (relative to the manifest); a factory is defined in its file
    and an npz dataset holds arrays that fit the model's input."""
    base_dir = Path(ctx.doc.file).resolve().parent
    model = _dict(ctx.spec.get("model"))
    source = _dict(model.get("source"))
    src = _existing_file(ctx, base_dir, ("spec", "model", "source", "file"))
    if src is not None:
        factory = _str(source.get("factory")) or "build"
        if ctx.clean("spec", "model", "source", "factory"):
            _check_factory(ctx, src, factory)
    _existing_file(ctx, base_dir, ("spec", "model", "weights"))
    npz = _existing_file(ctx, base_dir, ("spec", "dataset", "npz"))
    if npz is not None:
        _check_npz(ctx, npz)
    if ctx.spec.get("target") == "hardware":  # packs live on the machine with the boards
        for i, _node in ctx.nodes():
            _existing_file(ctx, base_dir, ("spec", "nodes", i, "probe", "pack"))


def _existing_file(ctx: _Context, base_dir: Path, segments: Where) -> Path | None:
    text = _str(ctx.get(*segments))
    if text is None or not ctx.clean(*segments):
        return None
    path = resolve_path(base_dir, text)
    if path.is_dir():
        ctx.add(segments, f"{text} is a directory, not a file")
        return None
    if not path.is_file():
        ctx.add(segments, f"file not found: {text} (looked for {path})")
        return None
    return path


def _check_factory(ctx: _Context, path: Path, factory: str) -> None:
    """The factory is defined at the top level of its file (read with ast: torch not needed)."""
    where: Where = ("spec", "model", "source", "factory")
    if ctx.get(*where) is None:
        where = ("spec", "model", "source")
    try:
        with path.open("rb") as fh:
            tree = ast.parse(fh.read(MAX_SOURCE_BYTES), filename=str(path))
    except SyntaxError as exc:
        ctx.add(
            ("spec", "model", "source", "file"),
            f"{path.name}:{exc.lineno}: Python syntax error: {exc.msg}",
        )
        return
    except (OSError, ValueError) as exc:
        ctx.add(("spec", "model", "source", "file"), f"cannot read {path.name}: {exc}")
        return
    defined: list[str] = []
    for stmt in tree.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.append(stmt.name)
        elif isinstance(stmt, ast.Assign):
            defined += [t.id for t in stmt.targets if isinstance(t, ast.Name)]
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            defined.append(stmt.target.id)
        elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
            for alias in stmt.names:
                if alias.name == "*":
                    return  # anything may come in: leave it to the export
                defined.append(alias.asname or alias.name.split(".")[0])
    if factory not in defined:
        functions = [
            s.name for s in tree.body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
        ]
        listed = f" (functions: {', '.join(functions)})" if functions else ""
        ctx.add(
            where,
            f"{path.name} defines no top-level {factory!r}{_did_you_mean(factory, functions)}"
            f"{listed}",
        )


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shape and dtype kind of each array in an .npz, reading only the .npy headers."""
    from numpy.lib import format as npy  # numpy only for npz datasets: keeps validate fast

    out: dict[str, tuple[tuple[int, ...], str]] = {}
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as fh:
                version = npy.read_magic(fh)
                if version == (1, 0):
                    shape, _, dtype = npy.read_array_header_1_0(fh)
                else:
                    shape, _, dtype = npy.read_array_header_2_0(fh)
            out[info.filename[:-4]] = (tuple(shape), dtype.kind)
    return out


def _check_npz(ctx: _Context, path: Path) -> None:
    where: Where = ("spec", "dataset", "npz")
    try:
        arrays = _npz_headers(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        ctx.add(where, f"{path.name} is not a readable .npz file ({exc})")
        return
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        ctx.add(where, f"{path.name} has no {' or '.join(missing)} (it has: {', '.join(arrays)})")
        return
    input_shape = _list(_dict(ctx.spec.get("model")).get("input"))
    for split in ("train", "test"):
        x, y = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        if x is None and y is None:
            continue
        if x is None or y is None:
            ctx.add(where, f"{path.name} has only one of x_{split} and y_{split}")
            continue
        (x_shape, x_kind), (y_shape, y_kind) = x, y
        if x_kind != "f":
            ctx.add(where, f"x_{split} in {path.name} must hold floats")
        if y_kind not in "iu" or len(y_shape) != 1:
            ctx.add(where, f"y_{split} in {path.name} must be a 1-D array of integer class ids")
        elif x_shape[:1] != y_shape:
            ctx.add(
                where,
                f"x_{split} has {x_shape[0] if x_shape else 0} samples but y_{split} {y_shape[0]}",
            )
        if input_shape and ctx.clean("spec", "model", "input") and list(x_shape[1:]) != input_shape:
            ctx.add(
                where,
                f"x_{split} samples are shaped {list(x_shape[1:])} but spec.model.input is "
                f"{input_shape}",
            )


# --- memory fit ------------------------------------------------------------------------------


def stage_slots(schedule: str, micro_batches: int) -> int:
    """Micro-batches a stage plans room for (stashed activations): every micro-batch of a batch,
    as compiler/cluster.py's plan_cluster plans them, so validate and export agree. (A sequential
    schedule could do with one; a 1F1B one with the stages downstream.)"""
    del schedule
    return micro_batches


@dataclass(frozen=True)
class StageFit:
    """What one stage needs of its MCU, as validate predicts it (the build measures the ELF)."""

    arena_bytes: int
    sram_bytes: int  # arena + the firmware's runtime reserve
    blob_bytes: int
    flash_bytes: int  # blob + the firmware's code reserve


def stage_fit(
    ir: ModelIR,
    first: int,
    last: int,
    mcu: profiles.McuProfile,
    *,
    batch_size: int,
    micro_batches: int,
    momentum: bool,
    schedule: str,
    stage_index: int,
    stage_count: int,
) -> StageFit:
    """Plan the stage's memory and add what the firmware itself takes on ``mcu``."""
    plan = plan_stage(
        ir,
        first,
        last,
        micro_batch=micro_batch_size(batch_size, micro_batches),
        slots=stage_slots(schedule, micro_batches),
        momentum=momentum,
        stage_index=stage_index,
        stage_count=stage_count,
    )
    blob = blob_size(plan, last - first + 1)
    fit = predict_fit(plan, blob, mcu)
    return StageFit(
        arena_bytes=plan.arena_bytes,
        sram_bytes=fit.sram_bytes,
        blob_bytes=blob,
        flash_bytes=fit.flash_bytes,
    )


def blob_bytes(plan: MemoryPlan, layer_count: int) -> int:
    """Size of the stage's blob (docs/blob-format.md) without building it."""
    return blob_size(plan, layer_count)


def _check_fit(ctx: _Context, ir: ModelIR) -> None:
    """Each stage's memory plan fits its MCU: the arena in SRAM, the blob in flash, each with what
    the firmware itself needs (the profile's runtime reserve)."""
    if not ctx.clean("spec", "training"):
        return
    training = _dict(ctx.spec.get("training"))
    batch = _int(training.get("batch_size"))
    micro = _int(training.get("micro_batches")) or 1
    if batch is None or micro > batch:
        return
    momentum = (_number(_dict(training.get("optimizer")).get("momentum")) or 0.0) > 0
    schedule = str(training.get("schedule", "pipelined"))
    node_mcu = {
        str(node.get("name")): (i, str(node.get("mcu")))
        for i, node in ctx.nodes()
        if ctx.clean("spec", "nodes", i, "name") and ctx.clean("spec", "nodes", i, "mcu")
    }

    stages = ctx.spec.get("stages", "auto")
    spans: list[tuple[Where, str, int, int]] = []
    if isinstance(stages, list):
        for i, stage in enumerate(stages):
            first, last = _dict(stage)["layers"]
            spans.append((("spec", "stages", i), str(_dict(stage)["node"]), first, last))
    elif len(node_mcu) == 1:  # "auto" on one node can only mean the whole model there
        name, (index, _) = next(iter(node_mcu.items()))
        spans.append((("spec", "nodes", index), name, 0, len(ir.layers) - 1))

    for stage_index, (where, node, first, last) in enumerate(spans):
        mcu_name = node_mcu.get(node, (0, ""))[1]
        if mcu_name not in profiles.mcu_names():
            continue
        mcu = profiles.mcu(mcu_name)
        fit = stage_fit(
            ir,
            first,
            last,
            mcu,
            batch_size=batch,
            micro_batches=micro,
            momentum=momentum,
            schedule=schedule,
            stage_index=stage_index,
            stage_count=len(spans),
        )
        what = f"stage {stage_index} ({_span(first, last)}) on node {node!r} ({mcu.name})"
        if fit.sram_bytes > mcu.sram_capacity:
            parts = f"arena {fit.arena_bytes:,}"
            if mcu.runtime_sram_reserve:
                parts += f" + runtime {mcu.runtime_sram_reserve:,}"
            ctx.add(
                where,
                f"{what} needs {fit.sram_bytes:,} bytes of SRAM ({parts}) but has "
                f"{mcu.sram_capacity:,} in {mcu.arena_region}: "
                f"{fit.sram_bytes - mcu.sram_capacity:,} bytes too many",
            )
        if fit.flash_bytes > mcu.flash_capacity:
            ctx.add(
                where,
                f"{what} needs {fit.flash_bytes:,} bytes of flash (blob {fit.blob_bytes:,} + "
                f"firmware {mcu.runtime_flash_reserve:,}) but has {mcu.flash_capacity:,}: "
                f"{fit.flash_bytes - mcu.flash_capacity:,} bytes too many",
            )
