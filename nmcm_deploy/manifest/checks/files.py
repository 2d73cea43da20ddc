"""Checks of the files a manifest names (relative to the manifest): they exist, a model factory
is defined at the top of its file, and an npz dataset holds arrays that fit the model's input."""

from __future__ import annotations

import ast
import zipfile
from pathlib import Path

from nmcm_deploy.manifest.checks.context import (
    Context,
    Where,
    as_dict,
    as_list,
    as_str,
    did_you_mean,
)
from nmcm_deploy.manifest.loader import resolve_path
from nmcm_deploy.manifest.model import DEFAULT_FACTORY

MAX_SOURCE_BYTES = 1 << 20


def check_files(ctx: Context) -> None:
    """Files the manifest names exist (relative to the manifest); a factory is defined in its file
    and an npz dataset holds arrays that fit the model's input."""
    base_dir = Path(ctx.doc.file).resolve().parent
    model = as_dict(ctx.spec.get("model"))
    source = as_dict(model.get("source"))
    src = _existing_file(ctx, base_dir, ("spec", "model", "source", "file"))
    if src is not None:
        factory = as_str(source.get("factory")) or DEFAULT_FACTORY
        if ctx.clean("spec", "model", "source", "factory"):
            _check_factory(ctx, src, factory)
    _existing_file(ctx, base_dir, ("spec", "model", "weights"))
    npz = _existing_file(ctx, base_dir, ("spec", "dataset", "npz"))
    if npz is not None:
        _check_npz(ctx, npz)
    if ctx.spec.get("target") == "hardware":  # packs live on the machine with the boards
        for i, _node in ctx.nodes():
            _existing_file(ctx, base_dir, ("spec", "nodes", i, "probe", "pack"))


def _existing_file(ctx: Context, base_dir: Path, segments: Where) -> Path | None:
    text = as_str(ctx.get(*segments))
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


def _check_factory(ctx: Context, path: Path, factory: str) -> None:
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
            f"{path.name} defines no top-level {factory!r}{did_you_mean(factory, functions)}"
            f"{listed}",
        )


def _check_npz(ctx: Context, path: Path) -> None:
    where: Where = ("spec", "dataset", "npz")
    from nmcm_deploy.datasets import npz_headers  # numpy only for npz datasets: keeps validate fast

    try:
        arrays = npz_headers(path)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        ctx.add(where, f"{path.name} is not a readable .npz file ({exc})")
        return
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        ctx.add(where, f"{path.name} has no {' or '.join(missing)} (it has: {', '.join(arrays)})")
        return
    input_shape = as_list(as_dict(ctx.spec.get("model")).get("input"))
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
