"""A job page's sections on a model's quality: the gate, data health, drift, calibration, label
issues, the MLflow mirror."""

from __future__ import annotations

from typing import Any

from services.api.markup import badge, e, fmt, table
from services.api.schemas import (
    VersionDetail,
)


def gate_table(v: VersionDetail, root: str = "") -> str:
    rows = "".join(
        f'<tr data-rule="{e(r.metric)}"><td>{e(r.metric)}</td><td class=num>{fmt(r.value)}</td>'
        f"<td class=num>{e(r.op)} {fmt(r.threshold, 2)}</td>"
        f"<td>{badge('pass' if r.passed else 'fail')}</td></tr>"
        for r in v.gate.rules
    )
    return (
        f'<section class="gate" data-version="{v.version}"><h2>Model {e(v.model_name)} '
        f"v{v.version}: gate {badge(v.gate.status)}</h2>"
        f'<p><a href="{e(root)}/ui/models/{e(v.model_name)}/versions/{v.version}">'
        "model card</a></p>"
        + table(["rule", "value", "threshold", "outcome"], rows)
        + f'<p class="muted">artifact: {e(v.artifact_uri)}</p></section>'
    )


def health_section(health: dict[str, Any] | None) -> str:
    if health is None:
        return ""
    items = "".join(
        f'<li data-kind="{e(f["kind"])}">{e(f["message"])}</li>' for f in health.get("findings", [])
    )
    return (
        '<section id="health"><h2>Data health</h2>'
        f'<p class="muted">{health.get("images")} images, {health.get("classes")} classes,'
        f" imbalance {fmt(health.get('imbalance_ratio'), 1)}</p>"
        + (f"<ul>{items}</ul>" if items else '<p class="muted">no findings</p>')
        + drift_line(health.get("drift"))
        + label_conflicts_table(health.get("label_conflicts") or [])
        + "</section>"
    )


def drift_line(drift: dict[str, Any] | None) -> str:
    """The batch against the production version's data (training/drift.py)."""
    if not drift:
        return ""
    chi = drift.get("chi_square") or {}
    p = chi.get("p_value")
    return (
        f'<p id="drift">Against v{e(drift.get("production_version"))} in production: class '
        f"mix total variation {fmt(drift.get('total_variation'), 3)}"
        + (f", chi-square p {p:.2g}" if isinstance(p, (int, float)) else "")
        + f", {e(drift.get('leakage_count', 0))} image(s) matching its test split</p>"
    )


def calibration_section(v: VersionDetail, metrics: dict[str, Any] | None, root: str) -> str:
    """ECE before and after temperature scaling, and the reliability diagram."""
    cal = (metrics or {}).get("calibration")
    if not cal:
        return ""
    src = f"{e(root)}/ui/models/{e(v.model_name)}/versions/{v.version}/reliability.png"
    return (
        f'<section class="calibration" data-version="{v.version}">'
        f"<h2>Calibration ({e(v.model_name)} v{v.version}, test split, {cal['n_bins']} bins)</h2>"
        f"<p>ECE {fmt(cal['ece_before'])} before, {fmt(cal['ece_after'])} after "
        f"temperature scaling (T = {cal['temperature']:.3g}, fitted on "
        f"{e(cal.get('fitted_on') or str(cal['validation_images']) + ' validation images')}; "
        "every predict path applies it)</p>"
        f'<img class="plot" alt="reliability diagram" src="{src}"></section>'
    )


def label_issues_section(report: dict[str, Any] | None, job_id: int, root: str) -> str:
    """label_check: the images worth relabelling first, and their picture."""
    if report is None:
        return ""
    if report.get("error"):
        return (
            '<section id="label-issues"><h2>Label issues</h2>'
            f'<p class="error">the check failed: {e(report["error"])}</p></section>'
        )
    rows = "".join(
        f"<tr><td class=num>{i['rank']}</td><td>{e(i['path'])}</td><td>{e(i['given_label'])}</td>"
        f"<td>{e(i['likely_label'])}</td><td class=num>{fmt(i['confidence'], 3)}</td>"
        f"<td class=num>{fmt(i['given_label_prob'], 3)}</td></tr>"
        for i in report.get("issues", [])
    )
    img = (
        f'<img class="plot" alt="label issues" src="{e(root)}/ui/jobs/{job_id}/label_issues.png">'
        if rows
        else ""
    )
    return (
        '<section id="label-issues"><h2>Label issues</h2>'
        f'<p class="muted">{e(report.get("issues_found"))} likely mislabelled among '
        f"{e(report.get('images_checked'))} train + val images; {e(report.get('source'))}</p>"
        + img
        + table(
            ["rank", "image", "given", "likely", "confidence", "p(given)"],
            rows,
            table_id="label-issues-table",
            empty="no label issues found",
        )
        + "</section>"
    )


def label_conflicts_table(conflicts: list[dict[str, Any]]) -> str:
    """The same picture under two classes: both paths, both classes, how it was found."""
    if not conflicts:
        return ""
    rows = "".join(
        f"<tr><td>{e(c['a'])}</td><td>{e(c['a_class'])}</td><td>{e(c['b'])}</td>"
        f"<td>{e(c['b_class'])}</td><td>{e(c['how'])}</td></tr>"
        for c in conflicts
    )
    return "<h3>Label conflicts</h3>" + table(
        ["image", "class", "same picture", "class", "found by"], rows, table_id="label-conflicts"
    )


def mlflow_line(backlog: dict[str, Any] | None) -> str:
    """The line "MLflow: n records pending" (repo.mlflow_backlog) of a tracked job."""
    if not backlog or not backlog["records"]:
        return ""
    n = backlog["pending"]
    text = f"{n} record{'s' if n != 1 else ''} pending" if n else "every record written"
    if backlog["refused"]:
        text += f", {backlog['refused']} refused"
    if backlog["error"] and (n or backlog["refused"]):
        text += f" (last error: {backlog['error']})"
    return f'<p id="mlflow">MLflow: {e(text)}</p>'
