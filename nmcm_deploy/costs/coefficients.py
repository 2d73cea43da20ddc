"""Instructions per feature: the fitted weights of the cost model, as data.

One file per core build (``cortex-m4``: the F413's, ``cortex-m7``: the H7A3's), shipped with the
profiles in ``nmcm_deploy/profiles/costs/`` and written by ``nmcm calibrate``. For each layer kind
and direction, and for the loss and the optimizer step, the instructions each feature
(features.py) costs: a call's instructions are the sum of feature x weight.

The weights are fitted by non-negative least squares on the relative error (a layer of 100
instructions counts as much as one of 100,000), so that the model is as good for small layers as
for large ones, and no weight can go negative to cancel another.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.optimize import nnls

from nmcm_deploy.costs.features import Features
from nmcm_deploy.errors import NmcmError

FORMAT_VERSION = 1
SHIPPED = Path(__file__).resolve().parent.parent / "profiles" / "costs"


class CoefficientsError(NmcmError):
    """A coefficients file that cannot be read or lacks what the model needs."""


Weights = dict[str, float]


@dataclass(frozen=True)
class Observation:
    """One measured piece of work: its features and the instructions it took."""

    features: Features
    instructions: float


@dataclass(frozen=True)
class Fit:
    """Weights fitted to observations, and how far they are from them."""

    weights: Weights
    points: int
    max_relative_error: float
    mean_relative_error: float


def fit(observations: Sequence[Observation]) -> Fit:
    """Non-negative weights minimising the relative error over ``observations`` (module
    docstring). Features that are zero in every observation get no weight."""
    if not observations:
        raise ValueError("nothing to fit")
    names = sorted({n for o in observations for n, v in o.features.items() if v})
    a = np.array([[o.features.get(n, 0.0) for n in names] for o in observations], dtype=float)
    y = np.array([o.instructions for o in observations], dtype=float)
    if np.any(y <= 0):
        raise ValueError("every observation needs a positive instruction count")
    # Relative error: divide each row by its target. Columns scaled to unit norm for the solver.
    rows = a / y[:, None]
    scale = np.linalg.norm(rows, axis=0)
    scale[scale == 0] = 1.0
    solution, _ = nnls(rows / scale, np.ones_like(y))
    weights = {n: float(w) for n, w in zip(names, solution / scale, strict=True)}
    predicted = a @ (solution / scale)
    errors = np.abs(predicted - y) / y
    return Fit(weights, len(observations), float(errors.max()), float(errors.mean()))


def predict(weights: Mapping[str, float], features: Features) -> float:
    """Instructions of one piece of work. A feature the weights do not know is an error: the
    coefficients were fitted for another version of the kernels."""
    unknown = [n for n, v in features.items() if v and n not in weights]
    if unknown:
        raise CoefficientsError(
            f"the cost coefficients have no weight for {', '.join(sorted(unknown))}",
            hint="re-run `nmcm calibrate --target qemu`: the kernels changed since the fit",
        )
    return sum(weights[n] * v for n, v in features.items() if v)


@dataclass(frozen=True)
class Coefficients:
    """The weights of one core build, with where they come from."""

    core: str
    source: str  # how they were measured: "qemu instructions (mps2-an386, ...)" or "dwt cycles"
    layers: dict[str, dict[str, Weights]]  # kind label -> "forward"/"backward" -> weights
    loss: Weights
    step: Weights
    quality: dict[str, Any] = field(default_factory=dict)  # per piece: points, errors
    # What a weight times a feature counts: "instructions" (QEMU, per core build) or "cycles"
    # (DWT, on a board: per MCU, with its clock's wait states and caches in them).
    unit: str = "instructions"
    mcu: str = ""  # the MCU a board calibration was measured on ("" for a core's)

    def layer(self, kind: str, direction: str) -> Weights:
        try:
            return self.layers[kind][direction]
        except KeyError:
            raise CoefficientsError(
                f"the {self.core} cost coefficients have nothing for {kind} {direction}",
                hint="re-run `nmcm calibrate --target qemu`",
            ) from None

    def as_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "core": self.core,
            "source": self.source,
            "layers": self.layers,
            "loss": self.loss,
            "step": self.step,
            "quality": self.quality,
            "unit": self.unit,
            **({"mcu": self.mcu} if self.mcu else {}),
        }


def load(path: Path) -> Coefficients:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CoefficientsError(f"cannot read the cost coefficients {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format_version") != FORMAT_VERSION:
        raise CoefficientsError(
            f"{path} is not a cost coefficients file of format {FORMAT_VERSION}",
            hint="re-run `nmcm calibrate`",
        )
    try:
        return Coefficients(
            core=str(doc["core"]),
            source=str(doc["source"]),
            layers={
                str(kind): {str(d): _weights(w) for d, w in dirs.items()}
                for kind, dirs in doc["layers"].items()
            },
            loss=_weights(doc["loss"]),
            step=_weights(doc["step"]),
            quality=dict(doc.get("quality") or {}),
            unit=_unit(doc.get("unit", "instructions")),
            mcu=str(doc.get("mcu", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CoefficientsError(
            f"{path} is malformed ({exc!r})", hint="re-run `nmcm calibrate`"
        ) from None


def _unit(raw: Any) -> str:
    if raw not in ("instructions", "cycles"):
        raise ValueError(f"unit must be instructions or cycles, not {raw!r}")
    return str(raw)


def _weights(raw: Any) -> Weights:
    if not isinstance(raw, dict):
        raise TypeError("weights must be a mapping")
    out = {str(k): float(v) for k, v in raw.items()}
    if any(not np.isfinite(v) or v < 0 for v in out.values()):
        raise ValueError("weights must be finite and not negative")
    return out


def dump(coefficients: Coefficients, path: Path, header: Iterable[str] = ()) -> None:
    """Write ``coefficients`` as YAML, with ``header`` lines as comments on top."""
    from nmcm_deploy.files import atomic_write

    text = "".join(f"# {line}\n" for line in header)
    text += yaml.safe_dump(coefficients.as_dict(), sort_keys=False)
    atomic_write(path, text.encode())


def shipped(core: str) -> Coefficients:
    """The coefficients shipped with nmcm for ``core`` (cortex-m4, cortex-m7)."""
    path = SHIPPED / f"{core}.yaml"
    if not path.exists():
        raise CoefficientsError(
            f"nmcm ships no cost coefficients for {core}",
            hint="run `nmcm calibrate --target qemu` for it",
        )
    return load(path)


def calibrated_path(core: str) -> Path:
    """Where `nmcm calibrate` writes ``core``'s weights by default: under the state folder, where
    they take precedence over the shipped ones."""
    from nmcm_deploy.reconcile.state import state_root

    return state_root() / "costs" / f"{core}.yaml"


def board_path(mcu: str) -> Path:
    """Where `nmcm calibrate --target hardware` writes the cycle weights of ``mcu``: under the
    state folder, where they take precedence over any instruction weights for that MCU."""
    from nmcm_deploy.reconcile.state import state_root

    return state_root() / "costs" / f"{mcu}.yaml"


def board_calibration(mcu: str) -> Coefficients | None:
    """This machine's board calibration of ``mcu`` (cycles), if there is one."""
    path = board_path(mcu)
    if not path.exists():
        return None
    found = load(path)
    if found.unit != "cycles" or found.mcu != mcu:
        raise CoefficientsError(
            f"{path} is not a board calibration of {mcu} (unit {found.unit}, mcu {found.mcu!r})",
            hint=f"re-run `nmcm calibrate --target hardware` on a {mcu} board, or remove it",
        )
    return found


def current(core: str) -> tuple[Coefficients, Path]:
    """The weights the cost model uses for ``core``: this machine's calibration if there is one
    (calibrated_path), else the shipped ones; with the file they come from."""
    path = calibrated_path(core)
    if path.exists():
        return load(path), path
    shipped_path = SHIPPED / f"{core}.yaml"
    return shipped(core), shipped_path
