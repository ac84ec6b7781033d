"""The comparison of runs (services/registry/compare.py), pure: the hyperparameters that
differ and only those, the metrics with the best marked, per-class figures, missing
figures as None, the gate's rules, the data sets, a tune job's configs, the job-id rule,
and the pictures."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from services.registry.compare import (
    ClassFigures,
    DataSet,
    Epoch,
    GateRule,
    JobIds,
    Run,
    Trial,
    Tuning,
    Version,
    compare,
    differing,
    split_digest,
)
from services.registry.compare_plots import curves_png, tuning_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(job_id: int, hp: dict, version: Version | None = None, **kw) -> Run:
    return Run(
        job_id=job_id,
        batch_id=f"b{job_id}",
        model_name="m",
        mode=kw.pop("mode", "train"),
        status=kw.pop("status", "success"),
        hyperparameters=hp,
        data=kw.pop("data", DataSet(uri="/d")),
        version=version,
        **kw,
    )


def version(n: int, status: str = "approved", per_class=None, gate=(), **metrics) -> Version:
    return Version(
        model_name="m",
        version=n,
        status=status,
        metrics=metrics,
        per_class=per_class,
        gate=list(gate),
    )


def test_only_the_hyperparameters_that_differ_absent_counting_as_a_value():
    a = run(1, {"lr": 0.001, "epochs": 5, "hflip": True, "aug": [1, 2], "cb": {"x": 1}})
    b = run(2, {"lr": 0.01, "epochs": 5.0, "hflip": 1, "aug": [1, 2], "cb": {"x": 1}, "new": 3})
    params, same = differing([a, b])
    by = {p.name: p for p in params}
    # 5 and 5.0 are the same value; True and 1 are not; a name one job lacks differs
    assert sorted(by) == ["hflip", "lr", "new"] and same == 3
    assert by["lr"].values == [0.001, 0.01] and by["lr"].absent == []
    assert by["new"].values == [None, 3] and by["new"].absent == [1]
    c = compare([a, a.model_copy(update={"job_id": 3})])
    assert c.hyperparameters == [] and c.same_hyperparameters == 5


def test_metrics_side_by_side_best_marked_missing_as_none():
    a = run(1, {}, version(1, accuracy=0.9, precision=0.8, recall=0.7, f1=0.75, ece=0.05))
    b = run(
        2, {}, version(2, "rejected", accuracy=0.95, precision=0.8, recall=None, f1=0.7, ece=0.1)
    )
    failed = run(3, {}, status="failed", accuracy=None)
    no_version = run(4, {}, accuracy=0.5)  # recorded without a version: its own accuracy
    c = compare([a, b, failed, no_version])
    lines = {m.name: m for m in c.metrics}
    assert list(lines) == ["accuracy", "precision", "recall", "f1", "ece"]  # no roc_auc: none
    assert lines["accuracy"].values == [0.9, 0.95, None, 0.5] and lines["accuracy"].best == [2]
    assert lines["precision"].best == [1, 2]  # a tie: both
    assert lines["recall"].values == [0.7, None, None, None] and lines["recall"].best == []
    assert lines["ece"].higher_is_better is False and lines["ece"].best == [1]
    assert [(r.version, r.verdict) for r in c.runs] == [(1, "approved"), (2, "rejected")] + [
        (None, None)
    ] * 2


def test_a_nan_figure_is_none_never_best():
    a = run(1, {}, version(1, accuracy=float("nan")))
    b = run(2, {}, version(2, accuracy=0.4))
    line = compare([a, b]).metrics[0]
    assert line.values == [None, 0.4] and line.best == []


def test_per_class_every_class_of_any_job_none_where_a_job_lacks_it():
    fig = ClassFigures(precision=0.9, recall=0.8, f1=0.85, support=10)
    a = run(1, {}, version(1, accuracy=0.9, per_class={"cat": fig, "dog": fig}))
    b = run(
        2, {}, version(2, accuracy=0.8, per_class={"dog": ClassFigures(recall=0.5), "eel": fig})
    )
    old = run(3, {}, version(3, accuracy=0.7))  # no metrics.json figures
    lines = {x.name: x for x in compare([a, b, old]).per_class}
    assert list(lines) == ["cat", "dog", "eel"]
    assert lines["cat"].precision == [0.9, None, None] and lines["cat"].support == [10, None, None]
    assert lines["dog"].recall == [0.8, 0.5, None] and lines["dog"].precision == [0.9, None, None]
    assert lines["eel"].f1 == [None, 0.85, None]


def test_gate_rules_every_rule_none_where_a_job_was_not_judged_by_it():
    acc = GateRule(metric="accuracy", threshold=0.9, value=0.95, passed=True)
    ece = GateRule(metric="ece", threshold=0.1, value=0.2, passed=False, op="<")
    a = run(1, {}, version(1, accuracy=0.95, gate=[acc]))
    b = run(
        2,
        {},
        version(
            2,
            "rejected",
            accuracy=0.8,
            gate=[acc.model_copy(update={"value": 0.8, "passed": False}), ece],
        ),
    )
    failed = run(3, {}, status="failed")
    gate = {g.metric: g for g in compare([a, b, failed]).gate}
    assert gate["accuracy"].values == [0.95, 0.8, None]
    assert gate["accuracy"].passed == [True, False, None]
    assert gate["ece"].op == "<" and gate["ece"].thresholds == [None, 0.1, None]


def test_data_sets_same_test_split_or_not_or_not_known():
    split = [{"sha1": "aa", "class": "x"}, {"sha1": "bb", "class": "y"}]
    digest = split_digest(split)
    assert digest == split_digest(split[::-1])  # whatever the order
    assert digest != split_digest([{"sha1": "aa", "class": "y"}, split[1]])  # relabelled
    assert split_digest([]) is None
    same = DataSet(uri="/d", per_class={"x": 1, "y": 1}, test_split_digest=digest)
    other = same.model_copy(update={"test_split_digest": "0" * 16, "uri": "/e"})
    d = compare([run(1, {}, data=same), run(2, {}, data=same)]).data
    assert (d.same_uri, d.same_classes, d.same_test_split) == (True, True, True)
    d = compare([run(1, {}, data=same), run(2, {}, data=other)]).data
    assert (d.same_uri, d.same_test_split) == (False, False)
    d = compare([run(1, {}, data=same), run(2, {}, data=DataSet(uri="/d"))]).data
    assert (d.same_classes, d.same_test_split) == (None, None)


def tuning(n: int = 3) -> Tuning:
    return Tuning(
        run_id=7,
        status="completed",
        metric="val_loss",
        mode="min",
        k_folds=3,
        best_index=1,
        trials=[
            Trial(
                index=i,
                rank=(i + 1) % n + 1,
                status="stopped_early" if i == n - 1 else "completed",
                config={"phase1_lr": 10.0**-i},
                stopped_at=2,
                mean=0.2 * (i + 1),
                std=0.05,
                folds=[0.2 * (i + 1) + d for d in (-0.05, 0.0, 0.05)],
            )
            for i in range(n)
        ],
    )


def test_a_tune_job_brings_every_config_and_its_picture():
    t = tuning()
    c = compare([run(1, {}), run(2, {}, mode="tune", tuning=t, missing=["metrics.json"])])
    assert [x.job_id for x in c.tuning] == [2] and len(c.tuning[0].trials) == 3
    assert c.tuning[0].trials[0].folds == pytest.approx([0.15, 0.2, 0.25])
    assert c.missing == ["job 2: metrics.json"]
    png = tuning_png(c.tuning[0])
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000
    many = tuning(60)  # more configs than a strip draws: still one picture
    assert tuning_png(c.tuning[0].model_copy(update={"trials": many.trials})).startswith(PNG_MAGIC)


def test_curves_overlaid_with_a_job_without_epochs():
    rows = [
        Epoch(epoch=i, phase=1, loss=1 / i, val_loss=None, accuracy=0.5, val_accuracy=0.6)
        for i in (1, 2, 3)
    ]
    png = curves_png([1, 2], [rows, []])
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000


@pytest.mark.parametrize(
    "ids, says",
    [
        ([1], "at least 2"),
        (list(range(1, 10)), "at most 8"),
        ([1, 2, 1], "job 1 named twice"),
        ([0, 2], "greater than or equal to 1"),
        ([1, 2**31], "less than or equal to"),
    ],
)
def test_two_to_eight_distinct_job_ids(ids, says):
    with pytest.raises(ValidationError, match=says):
        TypeAdapter(JobIds).validate_python(ids)
    with pytest.raises(ValueError, match="2 to 8 runs"):
        compare([run(1, {})])
    assert TypeAdapter(JobIds).validate_python([5, 3]) == [5, 3]  # the order is kept
