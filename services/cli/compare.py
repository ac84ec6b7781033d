"""``colecionador compare JOB JOB ...``: the jobs side by side in the terminal (or as the
JSON of ``GET /compare`` with ``--json``), and with ``--plots DIR`` the curves overlaid and
each tune job's configs as PNGs. 2 to 8 distinct job ids; bad ids or an unknown job exit 2
before anything is written. It reads the database and the store directly, as ``status``
does (services/registry/compare.py compares, compare_inputs.py reads)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from services.config import Settings
from services.errors import problem_words
from services.registry.compare import MAX_JOBS, MIN_JOBS, Comparison, JobIds, TuningOut

PAD = 2


def _num(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _text(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def grid(rows: Sequence[Sequence[str]], indent: int = 0) -> str:
    """Rows of cells as aligned columns (each as wide as its widest cell)."""
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
    return "\n".join(
        " " * indent + (" " * PAD).join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
        for r in rows
    )


def _model(c: Comparison) -> list[str]:
    return [
        f"{r.model_name} v{r.version} {r.verdict}" if r.version else f"{r.model_name} (no version)"
        for r in c.runs
    ]


def _head(c: Comparison) -> list[list[str]]:
    return [
        ["", *(f"job {i}" for i in c.jobs)],
        ["batch", *(r.batch_id for r in c.runs)],
        ["status", *(r.status for r in c.runs)],
        ["mode", *(r.mode for r in c.runs)],
        ["model", *_model(c)],
        ["epochs", *(str(r.epochs) for r in c.runs)],
    ]


def _params(c: Comparison) -> list[list[str]]:
    return [
        [p.name, *("(absent)" if j in p.absent else _text(v) for j, v in zip(c.jobs, p.values))]
        for p in c.hyperparameters
    ]


def _metrics(c: Comparison) -> list[list[str]]:
    return [
        [m.name, *(_num(v) + ("*" if j in m.best else "") for j, v in zip(c.jobs, m.values))]
        for m in c.metrics
    ]


def _per_class(c: Comparison) -> list[list[str]]:
    def cell(p: float | None, r: float | None, f: float | None, n: int | None) -> str:
        if p is None and r is None and f is None:
            return "-"
        return f"{_num(p, 2)}/{_num(r, 2)}/{_num(f, 2)} ({'-' if n is None else n})"

    return [[x.name, *map(cell, x.precision, x.recall, x.f1, x.support)] for x in c.per_class]


def _gate(c: Comparison) -> list[list[str]]:
    def cell(t: float | None, v: float | None, ok: bool | None, op: str) -> str:
        if t is None:
            return "(not judged)"
        return f"{_num(v)} {op} {t:.2f} {'pass' if ok else 'fail'}"

    return [
        [g.metric, *(cell(t, v, ok, g.op) for t, v, ok in zip(g.thresholds, g.values, g.passed))]
        for g in c.gate
    ]


def _data(c: Comparison) -> list[list[str]]:
    sets = c.data.sets
    return [
        ["dataset", *(s.uri for s in sets)],
        ["images", *(_text(s.images) if s.images is not None else "-" for s in sets)],
        ["classes", *(str(len(s.per_class)) if s.per_class else "-" for s in sets)],
        ["test split", *(_split(s.test_images, s.test_split_digest) for s in sets)],
    ]


def _split(images: int | None, digest: str | None) -> str:
    return "-" if not images else f"{images} images, {digest}"


def _same(flag: bool | None) -> str:
    return {None: "not known for every job", True: "the same in every job"}.get(
        flag, "NOT the same: the test metrics come from different images"
    )


def _tuning(t: TuningOut) -> str:
    from tuning.report import config_text

    ranked = sorted(t.trials, key=lambda x: (x.rank is None, x.rank or 0, x.index))
    rows = [["rank", "status", "epochs", f"{t.metric} mean ± std", "folds", "config"]]
    rows += [
        [
            str(x.rank or "-"),
            x.status,
            str(x.stopped_at),
            f"{_num(x.mean)} ± {_num(x.std)}",
            " ".join(_num(f, 3) for f in x.folds),
            config_text(x.config),
        ]
        for x in ranked
    ]
    head = f"tuning: job {t.job_id}, run {t.run_id} ({t.metric}, {t.k_folds} folds, {t.status})"
    return head + "\n" + grid(rows, 2)


def render(c: Comparison) -> str:
    """The comparison as text: a column per job."""
    parts = [grid(_head(c))]
    same = f"({c.same_hyperparameters} the same in every job)"
    sections = [
        (f"hyperparameters that differ {same}", _params(c), "every value is the same"),
        ("test metrics (* best)", _metrics(c), "no job has test metrics"),
        ("per class: precision/recall/f1 (support)", _per_class(c), "no per-class figures"),
        ("gate rules", _gate(c), "no job was judged"),
        ("data", _data(c), ""),
    ]
    for title, rows, empty in sections:
        body = grid([["", *(f"job {i}" for i in c.jobs)], *rows], 2) if rows else f"  {empty}"
        parts.append(f"{title}\n{body}")
    parts[-1] += f"\n  test split: {_same(c.data.same_test_split)}"
    parts += [_tuning(t) for t in c.tuning]
    if c.missing:
        parts.append("not read from the store: " + "; ".join(c.missing))
    return "\n\n".join(parts)


def write_plots(c: Comparison, folder: Path) -> list[Path]:
    """curves.png and tuning-job-<id>.png (one per tune job) in ``folder``."""
    from services.registry.compare_plots import curves_png, tuning_png

    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "curves.png"]
    written[0].write_bytes(curves_png(c.jobs, c.curves))
    for t in c.tuning:
        path = folder / f"tuning-job-{t.job_id}.png"
        path.write_bytes(tuning_png(t))
        written.append(path)
    return written


def cmd_compare(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from services.db.session import prepare_database, session_factory
    from services.registry.compare import compare
    from services.registry.compare_inputs import UnknownJobs, read_runs, with_store
    from services.store.storage import open_store, read_json

    try:
        ids = TypeAdapter(JobIds).validate_python(args.jobs)
    except ValidationError as e:
        parser.error(f"jobs: {problem_words(e.errors()[0])}")
    settings = Settings()
    prepare_database(settings)
    with session_factory(settings.db_url)() as s:
        try:
            runs = read_runs(s, ids)
        except UnknownJobs as e:
            parser.error(str(e))
    try:
        store = open_store(settings)
    except Exception:  # noqa: BLE001 - the comparison answers without the store
        store = None
    c = compare(with_store(runs, lambda key: read_json(store, key) if store else None))
    print(c.model_dump_json(indent=2) if args.json else render(c))
    if args.plots:
        for path in write_plots(c, Path(args.plots)):
            print(f"wrote {path}", file=sys.stderr)  # stdout stays the comparison
    return 0


def add_parsers(sub: Any) -> None:
    """The ``compare`` subcommand."""
    p = sub.add_parser(
        "compare", help=f"{MIN_JOBS} to {MAX_JOBS} jobs side by side: what differs, metrics, data"
    )
    p.add_argument("jobs", nargs="+", type=int, metavar="JOB", help="job ids, in column order")
    p.add_argument("--json", action="store_true", help="print the JSON of GET /compare")
    p.add_argument("--plots", metavar="DIR", help="write curves.png and tuning-job-<id>.png here")
    p.set_defaults(func=cmd_compare)
