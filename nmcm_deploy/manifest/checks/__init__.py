"""Semantic checks: what JSON Schema cannot say about a manifest.

Uniqueness across nodes, addresses inside the subnet, known MCUs and boards, stages that tile the
model, layer shapes, files that exist, and whether each stage fits its MCU's memory: one module per
concern (network, hardware, model, files, fit), run in a fixed order by ``semantic_problems``.

The checks run even when the schema found problems, so a user sees everything at once; each check
reads the raw data defensively and skips any part of the document the schema already flagged
(``dirty`` paths), so one mistake is not reported twice and malformed data never raises
(context.py).
"""

from __future__ import annotations

from collections.abc import Collection

from nmcm_deploy.errors import Problem
from nmcm_deploy.manifest.checks.context import Context
from nmcm_deploy.manifest.checks.files import check_files
from nmcm_deploy.manifest.checks.fit import check_fit
from nmcm_deploy.manifest.checks.hardware import check_profiles, check_target
from nmcm_deploy.manifest.checks.model import check_model, check_stages, check_training
from nmcm_deploy.manifest.checks.network import check_network, check_nodes
from nmcm_deploy.manifest.loader import LoadedYaml

__all__ = ["semantic_problems"]


def semantic_problems(
    doc: LoadedYaml, dirty: Collection[str] = (), *, fit: bool = True
) -> list[Problem]:
    """Every semantic problem of a loaded manifest. ``dirty``: paths that already have a problem;
    ``fit``: whether the stages must fit their MCUs (the study places the model elsewhere)."""
    if not isinstance(doc.data, dict):
        return []
    ctx = Context(doc, set(dirty))
    check_nodes(ctx)
    check_network(ctx)
    check_target(ctx)
    check_profiles(ctx)
    check_training(ctx)
    ir = check_model(ctx)
    stages_ok = check_stages(ctx, ir)
    check_files(ctx)
    if fit and ir is not None and stages_ok:
        check_fit(ctx, ir)
    return ctx.problems
