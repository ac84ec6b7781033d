"""A model card per version (``model_card.md`` in models/<name>/v<N>/): what the model
classifies, how it was trained and from what, how good it is, what to watch, and who
promoted it and why.

``render_model_card(card)`` is a pure function of a typed ``ModelCard`` (built from the
version folder's documents and the database by services/registry/card_inputs.py): the job
driver writes its output once, when the version is committed (the promotions then known:
the gate's own), and the version's page renders it again with the promotions recorded
since. No torch, no I/O: the API imports it.

Every value that comes from a request or a data set (class names, paths, reasons) is
escaped, so a hostile name cannot add links, images or HTML to the card.
"""

from __future__ import annotations

import json
import re
from typing import Any

from services.registry.card_types import (
    DriftSummary,
    LabelIssuesSummary,
    ModelCard,
    StartingWeights,
)
from services.store.artifacts import MODEL_CARD_FILE as MODEL_CARD_FILE  # model_card.md

LISTED_ISSUES = 10  # label issues shown in the card (label_issues.json has them all)


# ----------------------------------------------------------------- rendering
# Markdown's active characters; ``_`` only where it could open or close emphasis (not
# inside a word, as in image_size)
_MD_SPECIAL = re.compile(r"([\\`*\[\]<>|#~!]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def md(value: Any) -> str:
    """Text as Markdown that shows it literally: one line, special characters escaped."""
    text = " ".join(str(value).split())
    return _MD_SPECIAL.sub(r"\\\1", text) if text else "–"


def num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return out + ["| " + " | ".join(r) + " |" for r in rows] + [""]


def render_model_card(card: ModelCard) -> str:
    """The card as Markdown: what it classifies, how it was trained, how good it is, what
    to watch, promotions."""
    lines = [f"# Model card: {md(card.model_name)} v{card.version}", ""]
    trained = card.trained_at.strftime("%Y-%m-%d %H:%M UTC") if card.trained_at else "–"
    lines += [
        f"**{card.status}** by the quality gate · trained {trained} · job "
        f"{card.lineage.job_id} (batch {md(card.lineage.batch_id)})",
        "",
    ]
    for section in (_classifies, _trained, _how_good, _gate, _watch, _promotions):
        lines += section(card)
    return "\n".join(lines).rstrip() + "\n"


def _classifies(card: ModelCard) -> list[str]:
    split = " / ".join(f"{card.split.get(k, 0)} {k}" for k in ("train", "val", "test"))
    seed = card.lineage.hyperparameters.get("seed")
    out = [
        "## What it classifies",
        "",
        f"{len(card.classes)} classes, {card.images if card.images is not None else '–'} "
        f"images: {split} (stratified split, seed {seed}).",
        "",
    ]
    if card.skipped_images:
        out += [f"{card.skipped_images} unreadable image(s) skipped (metrics.json).", ""]
    rows = [
        [md(c.name), str(c.images) if c.images is not None else "–", str(c.support or 0)]
        + [num(c.precision), num(c.recall), num(c.f1)]
        for c in card.classes
    ]
    return out + _table(["class", "images", "test images", "precision", "recall", "f1"], rows)


def _weights_line(w: StartingWeights) -> str:
    if w.kind == "none":
        return "none: trained from randomly initialised weights"
    if w.kind == "pretrained":
        return f"torchvision's pretrained weights {md(w.weights)}"
    if w.kind == "model_version":
        return f"model {md(w.model_name)} v{w.version} ({md(w.weights)})"
    return f"the file {md(w.weights)}"


def _trained(card: ModelCard) -> list[str]:
    lin, hp = card.lineage, card.lineage.hyperparameters
    out = [
        "## How it was trained",
        "",
        f"- Backbone: {md(hp.get('backbone'))} at {hp.get('image_size')} px, two phases "
        f"({hp.get('phase1_epochs')} + {hp.get('phase2_epochs')} epochs)",
        f"- Starting weights: {_weights_line(lin.starting_weights)}",
        *(
            f"  - {md(a.model_name)} v{a.version} (job {a.job_id}) was trained on "
            f"{md(a.dataset_uri)} (fingerprint {md(a.dataset_fingerprint)}) from "
            f"{_weights_line(a.starting_weights)}"
            for a in lin.ancestors
        ),
        f"- Data set: {md(lin.dataset_uri)}, fingerprint {md(lin.dataset_fingerprint)}",
    ]
    t = lin.tuning
    if t is not None:
        best = md(json.dumps(t.best_config, sort_keys=True)) if t.best_config else "–"
        out.append(
            f"- Tuned: run {t.run_id} ({t.status}), {t.trials} trial(s), {t.k_folds} folds, "
            f"{md(t.scheduler)} on {md(t.metric)} ({md(t.mode)}); best config {best}"
        )
    out.append("")
    if not lin.changed_hyperparameters:
        return out + ["Every hyperparameter has its default value.", ""]
    rows = [
        [md(k), md(json.dumps(v)), md(json.dumps(lin.defaults.get(k)))]
        for k, v in sorted(lin.changed_hyperparameters.items())
    ]
    return (
        out
        + ["Hyperparameters that differ from the defaults:", ""]
        + _table(["name", "value", "default"], rows)
    )


def _interval(values: list[float] | None) -> str:
    return f" (90 % interval {num(values[0])}-{num(values[1])})" if values else ""


def _how_good(card: ModelCard) -> list[str]:
    m = card.test
    out = [
        "## How good it is",
        "",
        f"On the held-out test split ({m.n if m.n is not None else '–'} images): accuracy "
        f"{num(m.accuracy)}, precision {num(m.precision)}, recall {num(m.recall)}, "
        f"f1 {num(m.f1)} (macro), ROC AUC {num(m.roc_auc)}.",
        "",
    ]
    c = card.calibration
    if c is not None:
        kept = f"; T = 1 kept: {md(c.kept_because)}" if c.kept_because else ""
        out += [
            f"Calibration: expected calibration error {num(c.ece_before)}"
            f"{_interval(c.ece_before_interval)} before, {num(c.ece_after)}"
            f"{_interval(c.ece_after_interval)} after temperature scaling (T = "
            f"{c.temperature:.3g}, fitted on "
            f"{md(c.fitted_on or f'{c.validation_images} validation images')}{kept}; "
            f"{c.n_bins} bins); NLL {num(c.nll_before)} -> {num(c.nll_after)}.",
            "",
        ]
    if card.confusion:
        names = [md(x.name) for x in card.classes]
        rows = [
            [names[i] if i < len(names) else str(i)] + [str(v) for v in r]
            for i, r in enumerate(card.confusion)
        ]
        out += ["Confusion matrix (rows: true class, columns: predicted):", ""]
        out += _table(["true \\\\ predicted", *names], rows)
    return out


def _gate(card: ModelCard) -> list[str]:
    rows = [
        [
            md(r.metric),
            num(r.value),
            f"{r.op} {num(r.threshold, 2)}",
            "pass" if r.passed else "**FAIL**",
        ]
        for r in card.gate
    ]
    out = [f"### Quality gate: {card.status}", ""] + _table(
        ["rule", "value", "threshold", "outcome"], rows
    )
    for r in card.gate:
        if not r.passed:
            out.append(
                f"- Rejected by {md(r.metric)}: {num(r.value)} is not {r.op} {num(r.threshold, 2)}."
            )
    return out + ([""] if any(not r.passed for r in card.gate) else [])


# the health report's kinds the card names, in the order they matter
WATCHED = (
    ("label_conflicts", "Label conflicts (the same picture under two classes)"),
    ("leakage", "Leakage (duplicates across the train / val / test split)"),
    ("near_duplicates", "Near duplicates"),
    ("duplicates", "Exact duplicates"),
)


def _label_issue_lines(issues: LabelIssuesSummary | None) -> list[str]:
    if issues is None:
        return ["- Label issues: not checked (label_check=false)", ""]
    if issues.error:
        return [f"- Label issues: the check failed: {md(issues.error)}", ""]
    out = [
        f"- Label issues: {issues.issues_found} likely mislabelled among "
        f"{issues.images_checked} train + val images ({md(issues.source)})",
        "",
    ]
    if not issues.top:
        return out
    rows = [
        [str(i.rank), md(i.path), md(i.given_label), md(i.likely_label), num(i.confidence, 3)]
        for i in issues.top[:LISTED_ISSUES]
    ]
    more = issues.issues_found - len(rows)
    tail = [f"... and {more} more not shown here (label_issues.json).", ""] if more > 0 else []
    return out + _table(["rank", "image", "given", "likely", "confidence"], rows) + tail


def _drift_line(d: DriftSummary | None) -> str:
    if d is None:
        return "- Drift against production: no version in production to compare with"
    p = f", chi-square p {d.chi_square_p:.2g}" if d.chi_square_p is not None else ""
    new = f", new classes {md(', '.join(d.new_classes))}" if d.new_classes else ""
    gone = f", missing classes {md(', '.join(d.missing_classes))}" if d.missing_classes else ""
    return (
        f"- Drift against production (v{d.production_version}): class mix total variation "
        f"{num(d.total_variation, 3)}{p}{new}{gone}; {d.leakage_count} image(s) matching "
        "its test split"
    )


def _watch(card: ModelCard) -> list[str]:
    out = ["## What to watch", ""] + _label_issue_lines(card.label_issues)
    by_kind = {f.kind: f for f in card.findings}
    for kind, title in WATCHED:
        f = by_kind.get(kind)
        out.append(f"- {title}: {md(f.message) if f else 'none found'}")
    out.append(_drift_line(card.drift))
    named = {k for k, _ in WATCHED}
    others = [f for f in card.findings if f.kind not in named]
    out += [f"- {md(f.kind)}: {md(f.message)}" for f in others]
    return out + [""]


def _promotions(card: ModelCard) -> list[str]:
    out = ["## Promotions", "", f"Recorded {md(card.promotions_as_of)}.", ""]
    if not card.promotions:
        return out + ["No alias points here by a recorded move.", ""]
    rows = [
        [
            p.at.strftime("%Y-%m-%d %H:%M:%S"),
            md(p.alias),
            f"v{p.from_version}" if p.from_version else "–",
            md(p.by),
            md(p.reason),
            "yes" if p.overrode_gate else "no",
        ]
        for p in card.promotions
    ]
    return out + _table(["when (UTC)", "alias", "from", "by", "why", "overrode the gate"], rows)
