"""The comparison's pictures as PNG bytes: every job's epoch curves overlaid, and a tune
job's configs as a ranked strip (each config's mean ± std over folds, and every fold's
own figure). Drawn with matplotlib's object API (``Figure``, no pyplot): no global state,
so two requests may draw at once."""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from services.registry.compare import Epoch, TuningOut
from services.statuses import TrialStatus
from tuning.report import config_text

STATUS_COLOURS: dict[str, str] = {
    TrialStatus.COMPLETED: "tab:blue",
    TrialStatus.STOPPED_EARLY: "tab:orange",
    TrialStatus.FAILED: "tab:red",
}
MAX_STRIP = 40  # configs drawn in a strip; the rest are counted in its title
LABEL_CHARS = 48


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def _nan(values: Sequence[float | None]) -> list[float]:
    return [float("nan") if v is None else v for v in values]


def curves_png(job_ids: Sequence[int], curves: Sequence[Sequence[Epoch]]) -> bytes:
    """Validation accuracy and loss per epoch (solid), training's (dashed), one colour
    per job; a job without epochs is named in the legend as such."""
    fig = Figure(figsize=(13, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for n, (job_id, rows) in enumerate(zip(job_ids, curves)):
        colour = f"C{n % 10}"
        x = [r.epoch for r in rows]
        for ax, key in zip(axes, ("accuracy", "loss")):
            val = [getattr(r, f"val_{key}") for r in rows]
            train = [getattr(r, key) for r in rows]
            label = f"job {job_id}" if rows else f"job {job_id} (no epochs)"
            ax.plot(x, _nan(val), "o-", color=colour, label=label, markersize=3)
            ax.plot(x, _nan(train), "--", color=colour, alpha=0.6, linewidth=1)
    for ax, key in zip(axes, ("accuracy", "loss")):
        ax.set_title(f"{key}: validation (solid), training (dashed)")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    return _png(fig)


def _label(config: dict[str, object]) -> str:
    text = config_text(config)
    return text if len(text) <= LABEL_CHARS else text[: LABEL_CHARS - 1] + "…"


def tuning_png(t: TuningOut) -> bytes:
    """Every config of the tune job's search, best first (rank order), top to bottom:
    its mean of the run's metric over folds with ± std, and each fold's own value."""
    ranked = sorted(t.trials, key=lambda x: (x.rank is None, x.rank or 0, x.index))
    shown = ranked[:MAX_STRIP]
    fig = Figure(figsize=(10, 1.2 + 0.32 * max(len(shown), 1)), layout="constrained")
    ax = fig.subplots()
    for y, trial in enumerate(shown):
        colour = STATUS_COLOURS.get(trial.status, "tab:gray")
        folds = [f for f in trial.folds if f is not None]
        ax.scatter(folds, [y] * len(folds), s=14, color=colour, alpha=0.45, linewidths=0)
        if trial.mean is not None:
            err = trial.std or 0.0
            ax.errorbar(trial.mean, y, xerr=err, fmt="D", color=colour, markersize=6, capsize=3)
    ax.set_yticks(range(len(shown)), [f"#{x.rank or '–'} {_label(x.config)}" for x in shown])
    ax.set_ylim(len(shown) - 0.5, -0.5)  # the best at the top
    better = "lower" if t.mode == "min" else "higher"
    ax.set_xlabel(f"{t.metric} at the last reported epoch ({better} is better)")
    ax.grid(axis="x", alpha=0.3)
    more = f", {len(ranked) - len(shown)} more not drawn" if len(ranked) > len(shown) else ""
    ax.set_title(
        f"job {t.job_id}, tuning run {t.run_id}: {len(ranked)} config(s), mean ± std over "
        f"{t.k_folds} folds (diamond), each fold (dots){more}",
        fontsize=10,
    )
    for status, colour in STATUS_COLOURS.items():
        ax.scatter([], [], color=colour, label=status.replace("_", " "))
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _png(fig)
