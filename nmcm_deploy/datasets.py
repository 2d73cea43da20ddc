"""Training data: the built-in scikit-learn digits set, or an npz file (DESIGN.md, "Dataset npz").

Everything the training loop needs to reproduce a run lives here: the split and the batch order.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy

from nmcm_deploy.errors import NmcmError

BUILTIN = ("sklearn-digits",)


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray  # float32, (N, *input)
    y_train: np.ndarray  # int64 class ids
    x_test: np.ndarray
    y_test: np.ndarray
    classes: int


class DatasetError(NmcmError):
    pass


def _split(
    x: np.ndarray, y: np.ndarray, test_fraction: float, shuffle: bool, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(x)
    n_test = round(n * test_fraction)
    if shuffle:
        order = np.random.default_rng(seed).permutation(n)
        x, y = x[order], y[order]
    # Without shuffling, the last rows are held out.
    return x[: n - n_test], y[: n - n_test], x[n - n_test :], y[n - n_test :]


def load_dataset(
    *,
    name: str | None,
    npz: Path | None,
    input_shape: tuple[int, ...],
    test_fraction: float,
    shuffle: bool,
    seed: int,
    classes: int | None = None,
) -> Dataset:
    """The training and test sets. ``classes``: the model's output size, which every label must
    be below. Refuses (DatasetError) an empty training set, a NaN or infinity in any input, and
    labels outside the classes, naming the array and the first bad index."""
    if npz is not None:
        data = _load_npz(npz, input_shape, test_fraction, shuffle, seed, classes)
        if len(data.x_train) == 0:
            raise DatasetError(
                f"{npz.name}: no training samples are left after holding out test_fraction "
                f"{test_fraction} of {len(data.x_train) + len(data.x_test)}"
            )
        return data
    if name == "sklearn-digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        # Pixels are 0..16; scale to [0, 1].
        x = (digits.data.astype(np.float32) / 16.0).astype(np.float32)
        y = digits.target.astype(np.int64)
        x = _reshape(x, input_shape, "sklearn-digits")
        xt, yt, xv, yv = _split(x, y, test_fraction, shuffle, seed)
        return Dataset(xt, yt, xv, yv, 10)
    raise DatasetError(f"unknown dataset {name!r}; built-in: {', '.join(BUILTIN)}")


def _reshape(x: np.ndarray, input_shape: tuple[int, ...], what: str) -> np.ndarray:
    per_sample = int(np.prod(x.shape[1:]))
    if per_sample != int(np.prod(input_shape)):
        raise DatasetError(
            f"{what} samples have {per_sample} values, the model input {list(input_shape)} needs "
            f"{int(np.prod(input_shape))}"
        )
    return np.ascontiguousarray(x.reshape(len(x), *input_shape), dtype=np.float32)


def _index(flat: int, shape: tuple[int, ...]) -> str:
    return "[" + ", ".join(str(int(i)) for i in np.unravel_index(flat, shape)) + "]"


def _check_finite(path: Path, key: str, x: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(x))
    if len(bad):
        value = x.reshape(-1)[bad[0]]
        raise DatasetError(
            f"{path.name}: {key}{_index(int(bad[0]), x.shape)} is {value}; every input value "
            f"must be finite ({len(bad)} are not)"
        )


def _check_labels(path: Path, key: str, y: np.ndarray, classes: int | None) -> None:
    outside = y < 0 if classes is None else (y < 0) | (y >= classes)
    bad = np.flatnonzero(outside)
    if len(bad):
        span = ">= 0" if classes is None else f"in 0..{classes - 1} (the model's {classes} outputs)"
        raise DatasetError(f"{path.name}: {key}[{int(bad[0])}] is {int(y[bad[0]])}, not {span}")


def _load_npz(
    path: Path,
    input_shape: tuple[int, ...],
    test_fraction: float,
    shuffle: bool,
    seed: int,
    classes: int | None = None,
) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable npz file ({exc})") from exc
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise DatasetError(f"{path}: missing array {key!r} (has {sorted(arrays)})")
    x = arrays["x_train"]
    y = arrays["y_train"]
    if x.shape[1:] != tuple(input_shape):
        raise DatasetError(
            f"{path}: x_train is shaped {list(x.shape)}, expected [N, *{list(input_shape)}]"
        )
    if not np.issubdtype(y.dtype, np.integer) or y.shape != (len(x),):
        raise DatasetError(f"{path}: y_train must be {len(x)} integer class ids")
    if len(x) == 0:
        raise DatasetError(f"{path.name}: x_train holds no samples")
    # Checked as float32, the type the nodes compute in: 1e39 is an infinity there.
    x = x.astype(np.float32)
    _check_finite(path, "x_train", x)
    _check_labels(path, "y_train", y, classes)
    y = y.astype(np.int64)
    if "x_test" in arrays and "y_test" in arrays:
        xv, yv = arrays["x_test"], arrays["y_test"]
        if xv.shape[1:] != tuple(input_shape):
            raise DatasetError(f"{path}: x_test is shaped {list(xv.shape)}")
        if not np.issubdtype(yv.dtype, np.integer) or yv.shape != (len(xv),):
            raise DatasetError(f"{path}: y_test must be {len(xv)} integer class ids")
        xv = xv.astype(np.float32)
        _check_finite(path, "x_test", xv)
        _check_labels(path, "y_test", yv, classes)
        yv = yv.astype(np.int64)
        if shuffle:
            order = np.random.default_rng(seed).permutation(len(x))
            x, y = x[order], y[order]
        xt, yt = x, y
    else:
        xt, yt, xv, yv = _split(x, y, test_fraction, shuffle, seed)
    found = int(max(yt.max(initial=0), yv.max(initial=0))) + 1
    return Dataset(xt, yt, xv, yv, classes if classes is not None else found)


DIGITS_SAMPLES = 1797  # scikit-learn's 8x8 digits


def sample_counts(name: str | None, npz: Path | None, test_fraction: float) -> tuple[int, int]:
    """How many training and test samples ``load_dataset`` will give, without loading the data
    (an npz's array headers only): what the stage planner needs to model an epoch."""
    if npz is None:
        total = DIGITS_SAMPLES
    else:
        try:
            arrays = npz_headers(npz)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DatasetError(f"cannot read {npz}: {exc}") from None
        if "x_train" not in arrays:
            raise DatasetError(f"{npz.name} has no x_train array")
        train = arrays["x_train"][0][0] if arrays["x_train"][0] else 0
        if "x_test" in arrays:
            return train, arrays["x_test"][0][0] if arrays["x_test"][0] else 0
        total = train
    test = round(total * test_fraction)
    return total - test, test


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shape and dtype kind of each array in an .npz, reading only the .npy headers (so `validate`
    can check a dataset of any size quickly). Raises OSError, ValueError, zipfile.BadZipFile or
    EOFError for a file that is not a readable npz."""
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


def batch_order(
    n: int, batch_size: int, epochs: int, shuffle: bool, seed: int
) -> list[list[np.ndarray]]:
    """Row indices of every batch of every epoch. Without shuffle, batch i is rows [iB, (i+1)B);
    with shuffle, epoch e's permutation comes from (seed, e), reproducibly. The last partial
    batch is used."""
    epochs_out = []
    for epoch in range(epochs):
        rows = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        epochs_out.append([rows[i : i + batch_size] for i in range(0, n, batch_size)])
    return epochs_out
