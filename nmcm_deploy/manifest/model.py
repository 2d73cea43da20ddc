"""Typed, immutable view of a valid manifest.

Built only from data that passed the schema and the semantic checks, so this module converts and
fills in defaults but does not validate. Defaults here are the schema's ``default`` values (a test
keeps the two in step). Relative paths are resolved against the manifest's directory.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nmcm_deploy.compiler.fit import micro_batch_size
from nmcm_deploy.compiler.inline import inline_ir
from nmcm_deploy.compiler.ir import ModelIR
from nmcm_deploy.errors import Location, ModelError
from nmcm_deploy.manifest.loader import (
    LoadedYaml,
    LocationMap,
    Segment,
    parse_path,
    resolve_path,
)

DEFAULT_TARGET = "sim"
DEFAULT_SIM_NETWORK = "posix"
SIM_NETWORKS = ("posix", "w5500-emulator")
DEFAULT_MODEL_SEED = 0
DEFAULT_FACTORY = "build"
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_MICRO_BATCHES = 1
AUTO_MICRO_BATCHES = 16  # `micro_batches: auto` chooses among 1 .. this (at most batch_size)
DEFAULT_LOSS = "cross_entropy"
DEFAULT_OPTIMIZER = "sgd"
DEFAULT_MOMENTUM = 0.0
DEFAULT_WEIGHT_DECAY = 0.0
DEFAULT_SHUFFLE = True
DEFAULT_TRAINING_SEED = 0
DEFAULT_SCHEDULE = "pipelined"
DEFAULT_PORT = 5000
DEFAULT_STAGES = "auto"

Size2d = int | tuple[int, int]


@dataclass(frozen=True)
class LayerSpec:
    """One inline layer as written; options a layer kind does not take are None."""

    type: str  # linear | conv2d | relu | flatten | softmax | maxpool2d
    out_features: int | None = None
    out_channels: int | None = None
    kernel_size: Size2d | None = None
    stride: Size2d | None = None
    padding: Size2d | None = None
    bias: bool | None = None

    def options(self) -> dict[str, Any]:
        """The layer as the manifest gives it (``type`` and the options that were set)."""
        out: dict[str, Any] = {"type": self.type}
        for key in ("out_features", "out_channels", "kernel_size", "stride", "padding", "bias"):
            value = getattr(self, key)
            if value is not None:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True)
class SourceSpec:
    file: Path
    factory: str


@dataclass(frozen=True)
class ModelSpec:
    input: tuple[int, ...]
    layers: tuple[LayerSpec, ...]  # empty for a factory model
    source: SourceSpec | None
    weights: Path | None
    seed: int

    @property
    def inline(self) -> bool:
        return self.source is None

    def ir(self) -> ModelIR:
        """The IR of an inline model (pure Python); factory models go through torch elsewhere."""
        if self.source is not None:
            raise ModelError("a factory model's IR comes from tracing it", where="spec.model")
        return inline_ir(self.input, [layer.options() for layer in self.layers])


@dataclass(frozen=True)
class DatasetSpec:
    name: str | None  # a built-in dataset, or None when npz is given
    npz: Path | None
    test_fraction: float


@dataclass(frozen=True)
class OptimizerSpec:
    type: str
    lr: float
    momentum: float
    weight_decay: float


@dataclass(frozen=True)
class TrainingSpec:
    epochs: int
    batch_size: int
    micro_batches: int
    loss: str  # cross_entropy | mse
    optimizer: OptimizerSpec
    shuffle: bool
    seed: int
    schedule: str  # pipelined | sequential
    # `micro_batches: auto`: micro_batches is 1 until the planner chose (costs/planner.py,
    # resolve_manifest), then its choice; the flag stays so that outputs can say it was chosen.
    micro_batches_auto: bool = False

    @property
    def micro_batch_size(self) -> int:
        """Most samples in one micro-batch."""
        return micro_batch_size(self.batch_size, self.micro_batches)

    def micro_batch_choices(self) -> range:
        """The counts `micro_batches: auto` chooses among."""
        return range(1, min(self.batch_size, AUTO_MICRO_BATCHES) + 1)


@dataclass(frozen=True)
class SimSpec:
    """How the `sim` target runs the nodes."""

    network: str = DEFAULT_SIM_NETWORK  # posix | w5500-emulator
    pace: str = "off"  # off | model: sim nodes take the cost model's time (docs/cost-model.md)
    pace_scale: float = 1.0  # host seconds per modelled MCU second


@dataclass(frozen=True)
class NetworkSpec:
    subnet: ipaddress.IPv4Network | None
    gateway: ipaddress.IPv4Address | None
    port: int
    coordinator: ipaddress.IPv4Address | None


@dataclass(frozen=True)
class ProbeSpec:
    uid: str
    pack: Path | None
    frequency: int | None
    connect_mode: str | None


@dataclass(frozen=True)
class W5500Spec:
    ip: ipaddress.IPv4Address
    mac: str  # lower case, colon-separated
    spi: str | None  # None: the board's default
    cs: str | None
    reset: str | None

    @property
    def mac_bytes(self) -> bytes:
        return bytes(int(octet, 16) for octet in self.mac.split(":"))


@dataclass(frozen=True)
class NodeSpec:
    name: str
    mcu: str
    board: str | None
    probe: ProbeSpec | None
    w5500: W5500Spec | None


@dataclass(frozen=True)
class StageSpec:
    node: str
    first: int  # inclusive, 0-based
    last: int  # inclusive

    @property
    def layers(self) -> tuple[int, int]:
        return (self.first, self.last)


@dataclass(frozen=True)
class Manifest:
    path: Path  # the manifest file, absolute
    name: str
    target: str  # sim | qemu | hardware
    model: ModelSpec
    dataset: DatasetSpec
    training: TrainingSpec
    network: NetworkSpec
    nodes: tuple[NodeSpec, ...]
    stages: tuple[StageSpec, ...]  # empty when stages_auto
    stages_auto: bool
    labels: tuple[tuple[str, str], ...] = ()
    sim: SimSpec = SimSpec()
    # The document as loaded and where each of its values is, for later messages (export, plan).
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)
    locations: LocationMap | None = field(default=None, compare=False, hash=False, repr=False)

    def node(self, name: str) -> NodeSpec:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def locate(self, path: str | tuple[Segment, ...]) -> Location:
        """Where ``path`` (``"spec.nodes[1].mcu"`` or segments) is in the manifest file."""
        segments = parse_path(path) if isinstance(path, str) else path
        if self.locations is None:
            return Location(str(self.path), path=path if isinstance(path, str) else "")
        return self.locations.locate(segments)


def _opt_path(base: Path, value: Any) -> Path | None:
    return resolve_path(base, value) if isinstance(value, str) else None


def _size(value: Any) -> Size2d | None:
    if value is None:
        return None
    if isinstance(value, list):
        return (int(value[0]), int(value[1]))
    return int(value)


def _micro_batches(value: Any) -> int:
    return DEFAULT_MICRO_BATCHES if value == "auto" else int(value)


def _sim(raw: dict[str, Any]) -> SimSpec:
    return SimSpec(
        network=str(raw.get("network", DEFAULT_SIM_NETWORK)),
        pace=str(raw.get("pace", "off")),
        pace_scale=float(raw.get("pace_scale", 1.0)),
    )


def build_manifest(doc: LoadedYaml) -> Manifest:
    """The typed manifest of a document that passed validation."""
    data: dict[str, Any] = doc.data
    path = Path(doc.file).resolve()
    base = path.parent
    spec = data["spec"]

    m = spec["model"]
    source = m.get("source")
    model = ModelSpec(
        input=tuple(int(d) for d in m["input"]),
        layers=tuple(
            LayerSpec(
                type=str(ly["type"]),
                out_features=ly.get("out_features"),
                out_channels=ly.get("out_channels"),
                kernel_size=_size(ly.get("kernel_size")),
                stride=_size(ly.get("stride")),
                padding=_size(ly.get("padding")),
                bias=ly.get("bias"),
            )
            for ly in m.get("layers", [])
        ),
        source=SourceSpec(
            resolve_path(base, source["file"]), str(source.get("factory", DEFAULT_FACTORY))
        )
        if source is not None
        else None,
        weights=_opt_path(base, m.get("weights")),
        seed=int(m.get("seed", DEFAULT_MODEL_SEED)),
    )

    d = spec["dataset"]
    dataset = DatasetSpec(
        name=d.get("name"),
        npz=_opt_path(base, d.get("npz")),
        test_fraction=float(d.get("test_fraction", DEFAULT_TEST_FRACTION)),
    )

    t = spec["training"]
    o = t["optimizer"]
    training = TrainingSpec(
        epochs=int(t["epochs"]),
        batch_size=int(t["batch_size"]),
        micro_batches=_micro_batches(t.get("micro_batches", DEFAULT_MICRO_BATCHES)),
        loss=str(t.get("loss", DEFAULT_LOSS)),
        optimizer=OptimizerSpec(
            type=str(o.get("type", DEFAULT_OPTIMIZER)),
            lr=float(o["lr"]),
            momentum=float(o.get("momentum", DEFAULT_MOMENTUM)),
            weight_decay=float(o.get("weight_decay", DEFAULT_WEIGHT_DECAY)),
        ),
        shuffle=bool(t.get("shuffle", DEFAULT_SHUFFLE)),
        seed=int(t.get("seed", DEFAULT_TRAINING_SEED)),
        schedule=str(t.get("schedule", DEFAULT_SCHEDULE)),
        micro_batches_auto=t.get("micro_batches") == "auto",
    )

    n = spec.get("network", {})
    network = NetworkSpec(
        subnet=ipaddress.IPv4Network(n["subnet"]) if "subnet" in n else None,
        gateway=ipaddress.IPv4Address(n["gateway"]) if "gateway" in n else None,
        port=int(n.get("port", DEFAULT_PORT)),
        coordinator=ipaddress.IPv4Address(n["coordinator"]) if "coordinator" in n else None,
    )

    nodes = []
    for node in spec["nodes"]:
        probe, w = node.get("probe"), node.get("w5500")
        nodes.append(
            NodeSpec(
                name=str(node["name"]),
                mcu=str(node["mcu"]),
                board=node.get("board"),
                probe=ProbeSpec(
                    uid=str(probe["uid"]),
                    pack=_opt_path(base, probe.get("pack")),
                    frequency=probe.get("frequency"),
                    connect_mode=probe.get("connect_mode"),
                )
                if probe is not None
                else None,
                w5500=W5500Spec(
                    ip=ipaddress.IPv4Address(w["ip"]),
                    mac=str(w["mac"]).lower(),
                    spi=w.get("spi"),
                    cs=w.get("cs"),
                    reset=w.get("reset"),
                )
                if w is not None
                else None,
            )
        )

    stages = spec.get("stages", DEFAULT_STAGES)
    return Manifest(
        path=path,
        name=str(data["metadata"]["name"]),
        target=str(spec.get("target", DEFAULT_TARGET)),
        model=model,
        dataset=dataset,
        training=training,
        network=network,
        nodes=tuple(nodes),
        stages=tuple(
            StageSpec(str(s["node"]), int(s["layers"][0]), int(s["layers"][1])) for s in stages
        )
        if isinstance(stages, list)
        else (),
        stages_auto=not isinstance(stages, list),
        labels=tuple(sorted(data["metadata"].get("labels", {}).items())),
        sim=_sim(spec.get("sim", {})),
        raw=data,
        locations=doc.locations,
    )
