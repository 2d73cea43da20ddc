"""Checks of what is trained and how it is split: micro-batches that fit in a batch, the shapes of
an inline model and whether the dataset and the loss fit them, and stages that name known nodes
once each and tile the layers in order."""

from __future__ import annotations

from nmcm_deploy.compiler.inline import inline_ir
from nmcm_deploy.compiler.ir import ModelIR
from nmcm_deploy.errors import ModelError
from nmcm_deploy.manifest.checks.context import (
    Context,
    Where,
    as_dict,
    as_int,
    as_list,
    as_str,
    did_you_mean,
    layer_span,
)
from nmcm_deploy.manifest.loader import parse_path
from nmcm_deploy.manifest.model import DEFAULT_STAGES

DIGITS_INPUTS = ([1, 8, 8], [64])  # sklearn's digits: 8x8 grey images, or their 64 pixels
DIGITS_CLASSES = 10


def check_training(ctx: Context) -> None:
    training = as_dict(ctx.spec.get("training"))
    batch = as_int(training.get("batch_size"))
    micro = as_int(training.get("micro_batches"))
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


def check_model(ctx: Context) -> ModelIR | None:
    """Shapes of an inline model, and whether the dataset and the loss fit its input and output.
    Returns the IR when the model is inline and sound."""
    model = as_dict(ctx.spec.get("model"))
    if "layers" not in model or "source" in model or not ctx.clean("spec", "model"):
        return None
    input_shape = as_list(model.get("input"))
    try:
        ir = inline_ir(input_shape, as_list(model.get("layers")))
    except ModelError as exc:
        where = exc.where or "spec.model"
        message = exc.message.removeprefix(f"{exc.where}: ") if exc.where else exc.message
        if exc.hint:
            message += f"; {exc.hint}"
        ctx.add(parse_path(where), message)
        return None

    dataset = as_dict(ctx.spec.get("dataset"))
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


def check_stages(ctx: Context, ir: ModelIR | None) -> bool:
    """Stages name known nodes once each and tile the layers 0..n-1 in order. True when the stages
    are "auto" or a list sound enough to plan memory for."""
    stages = ctx.spec.get("stages", DEFAULT_STAGES)
    if not ctx.clean("spec", "stages"):
        return False
    if not isinstance(stages, list):
        return stages == "auto"
    model = as_dict(ctx.spec.get("model"))
    count = len(ir.layers) if ir is not None else None
    if count is None and "layers" in model and ctx.clean("spec", "model", "layers"):
        count = len(as_list(model.get("layers")))  # still known when shapes are wrong
    names = [n for _, node in ctx.nodes() if (n := as_str(node.get("name"))) is not None]
    # With a node name the schema rejected, "unknown node" would only repeat that problem.
    names_known = all(ctx.clean("spec", "nodes", i, "name") for i, _ in ctx.nodes())
    before = len(ctx.problems)
    used: dict[str, int] = {}
    backwards = False
    end = -1  # last layer covered so far
    for i, stage in enumerate(stages):
        base: Where = ("spec", "stages", i)
        node = as_str(as_dict(stage).get("node"))
        if node is not None and node not in names and names_known:
            ctx.add(
                (*base, "node"),
                f"unknown node {node!r}{did_you_mean(node, names)} (nodes: {', '.join(names)})",
            )
        elif node is not None and node in used:
            ctx.add(
                (*base, "node"),
                f"node {node!r} already runs stage {used[node]} (line "
                f"{ctx.line('spec', 'stages', used[node])}); a node runs one stage",
            )
        elif node is not None:
            used[node] = i
        span = as_list(as_dict(stage).get("layers"))
        if len(span) != 2 or as_int(span[0]) is None or as_int(span[1]) is None:
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
                ctx.add(where, f"gap: no stage runs {layer_span(end + 1, first - 1)}")
        elif first <= end:
            ctx.add(
                where,
                "overlaps the stage before, which already runs "
                f"{layer_span(first, min(last, end))}",
            )
        end = max(end, last)
    if count is not None and end < count - 1 and stages and not backwards:
        ctx.add(
            ("spec", "stages", len(stages) - 1, "layers"),
            f"no stage runs {layer_span(end + 1, count - 1)}: the last stage must end at layer "
            f"{count - 1}",
        )
    return len(ctx.problems) == before
