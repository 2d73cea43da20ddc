"""What the files a manifest names hold: the model a factory builds, its starting weights, the data.

These checks run once the manifest itself is sound (no schema or semantic problem), and only where
there is such work: a factory or a weights file is built with torch (the factory under its time
limit), an npz dataset is read with numpy; an inline model on the built-in digits costs nothing
here. They call the compiler and the dataset loader that `apply` calls, before anything is built,
so a manifest that `validate` calls valid is one that `apply` compiles, fits and trains on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nmcm_deploy.errors import ModelError, Problem
from nmcm_deploy.manifest.loader import LoadedYaml, Segment, parse_path
from nmcm_deploy.manifest.model import Manifest

if TYPE_CHECKING:
    from nmcm_deploy.compiler.cluster import StagePlan


def _problem(doc: LoadedYaml, where: str | tuple[Segment, ...], message: str) -> Problem:
    segments = parse_path(where) if isinstance(where, str) else where
    return Problem(doc.locations.locate(tuple(segments)), message)


def _check_stage_ranges(manifest: Manifest, layers: tuple[object, ...]) -> None:
    """A factory's layers are known only once it is traced: every stage must lie within them."""
    for i, stage in enumerate(manifest.stages):
        if stage.last >= len(layers):
            raise ModelError(
                f"layer {stage.last} does not exist: the model has {len(layers)} layers "
                f"(0..{len(layers) - 1})",
                where=f"spec.stages[{i}].layers",
            )


def content_problems(doc: LoadedYaml, manifest: Manifest, *, fit: bool = True) -> list[Problem]:
    """The problems of the model, weights and data files of a manifest with no other problem;
    with ``fit``, a factory model's stages must also fit their MCUs."""
    model = manifest.model
    if model.source is not None or model.weights is not None:
        from nmcm_deploy.compiler.cluster import build_model, plan_cluster
        from nmcm_deploy.costs import planner

        try:
            _, ir = build_model(manifest)
            plans: tuple[StagePlan, ...] = ()
            if model.source is not None:
                _check_stage_ranges(manifest, ir.layers)
                if fit:
                    resolved = planner.resolve_manifest(manifest, ir)
                    plans = plan_cluster(resolved, ir, planner.resolve).stages
        except ModelError as exc:
            # A manifest field where the error says one; else the model (tracing names fx nodes).
            field = exc.where if exc.where.startswith("spec.") else ""
            message = exc.message.removeprefix(f"{field}: ") if field else exc.message
            if exc.hint:
                message += f"; {exc.hint}"
            fallback = "spec.model.source" if model.source is not None else "spec.model"
            return [_problem(doc, field or fallback, message)]
        for plan in plans:  # a factory's stages fit: for inline models, checks.py tells
            if not plan.fit.fits:
                where = "spec.stages" if manifest.stages_auto else f"spec.stages[{plan.index}]"
                return [
                    _problem(
                        doc,
                        where,
                        f"stage {plan.index} does not fit {plan.node.name} ({plan.node.mcu}): "
                        f"{plan.fit.shortfall()}",
                    )
                ]
    else:
        ir = model.ir()
        auto_stages = manifest.stages_auto and len(manifest.nodes) > 1
        if fit and (auto_stages or manifest.training.micro_batches_auto):
            # The planner must find a split (and a micro-batch count) that fits, as apply will
            # ask it to.
            from nmcm_deploy.costs import planner
            from nmcm_deploy.datasets import DatasetError

            try:
                if manifest.training.micro_batches_auto:
                    planner.resolve_manifest(manifest, ir)  # places every count it tries
                else:
                    planner.resolve(manifest, ir)
            except DatasetError as exc:
                return [_problem(doc, ("spec", "dataset", "npz"), exc.message)]
            except ModelError as exc:
                field = exc.where if exc.where.startswith("spec.") else "spec.stages"
                message = exc.message.removeprefix(f"{field}: ")
                return [_problem(doc, field, f"{message}; {exc.hint}" if exc.hint else message)]
    if manifest.dataset.npz is None:
        return []
    from nmcm_deploy.datasets import DatasetError, load_dataset  # numpy: only for npz data

    try:
        load_dataset(
            name=manifest.dataset.name,
            npz=manifest.dataset.npz,
            input_shape=tuple(model.input),
            test_fraction=manifest.dataset.test_fraction,
            shuffle=manifest.training.shuffle,
            seed=manifest.training.seed,
            classes=ir.output_shape[0] if len(ir.output_shape) == 1 else None,
        )
    except DatasetError as exc:
        return [_problem(doc, ("spec", "dataset", "npz"), exc.message)]
    return []
