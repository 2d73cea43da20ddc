"""nmcm_deploy/reconcile/fields.py: the fields of a manifest's spec that changed, by path."""

from __future__ import annotations

from nmcm_deploy.reconcile.fields import ABSENT, FieldChange, as_data, changed_fields

SPEC = {
    "model": {
        "input": [1, 8, 8],
        "layers": [{"type": "conv2d", "out_channels": 8}, {"type": "relu"}],
    },
    "training": {"epochs": 5, "optimizer": {"type": "sgd", "lr": 0.05}},
    "stages": [{"node": "a", "layers": [0, 0]}, {"node": "b", "layers": [1, 1]}],
}


def copy() -> dict:  # type: ignore[type-arg]
    return as_data(SPEC)  # type: ignore[no-any-return]


def test_nothing_changed_is_no_field() -> None:
    assert changed_fields(SPEC, copy()) == []


def test_scalars_lists_and_records_are_named_by_their_path() -> None:
    after = copy()
    after["training"]["optimizer"]["lr"] = 0.02
    after["model"]["input"] = [1, 16, 16]  # a plain list: one value
    after["model"]["layers"][0]["out_channels"] = 16  # a list of records: item by item
    after["stages"][1]["layers"] = [1, 2]
    changes = changed_fields(SPEC, after)
    assert [c.text() for c in changes] == [
        "spec.model.input [1, 8, 8] → [1, 16, 16]",
        "spec.model.layers[0].out_channels 8 → 16",
        "spec.training.optimizer.lr 0.05 → 0.02",
        "spec.stages[1].layers [1, 1] → [1, 2]",
    ]
    assert all(c.kind == "changed" for c in changes)


def test_added_and_removed_fields_and_items() -> None:
    after = copy()
    after["training"]["shuffle"] = False
    del after["training"]["epochs"]
    after["stages"].append({"node": "c", "layers": [2, 2]})
    changes = {c.path: c for c in changed_fields(SPEC, after)}
    assert changes["spec.training.shuffle"] == FieldChange("spec.training.shuffle", ABSENT, False)
    assert changes["spec.training.epochs"].kind == "removed"
    assert changes["spec.training.epochs"].as_dict()["after"] is None
    assert changes["spec.stages[2]"].kind == "added"
    assert changes["spec.stages[2]"].text().startswith("spec.stages[2]: added, {")
    fewer = copy()
    fewer["stages"].pop()
    (gone,) = changed_fields(SPEC, fewer)
    assert (gone.path, gone.kind) == ("spec.stages[1]", "removed")


def test_long_values_are_cut_and_dates_become_text() -> None:
    import datetime

    after = copy()
    after["model"]["input"] = list(range(100))
    (change,) = changed_fields(SPEC, after)
    assert change.text().startswith("spec.model.input [1, 8, 8] → [0, 1, 2,")
    assert len(change.text()) < 100 and change.text().endswith("…")
    assert change.as_dict()["after"] == list(range(100))  # the data is whole
    assert as_data({"when": datetime.date(2026, 12, 3)}) == {"when": "2026-12-03"}
