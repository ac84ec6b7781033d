"""``make demo`` as a new user runs it: ``colecionador demo`` in a fresh COLECIONADOR_HOME,
timed from the command's start to its exit, and what it made, read back from the store.

Reported per run: wall seconds, the test accuracy of ``digits`` (the two-phase job) and of
``digits-backbone``, the pool's predictions that the answer key says are right, and the
temperature in ``digits``' metrics.json; then the goals of issue #27 (under 150 s, test
accuracy >= 0.98) and whether every run gave the same figures (same seed, same metrics).
The suite runs the demo with a quick recipe (tests/integration/test_cli_and_demo.py); the
recipe's own figures are measured here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from services.config import Settings
from services.store.artifacts import METRICS_FILE, version_prefix
from services.store.storage import open_store

GOAL_S, GOAL_ACCURACY = 150.0, 0.98
POOL = re.compile(r"the pool: (\d+) of (\d+) predicted right")


def _metrics(home: Path, model: str) -> dict[str, Any]:
    """Version 1's metrics.json of ``model`` in the store the demo used: the one of
    ``home`` (the demo ran with no COLECIONADOR_ variable but the home)."""
    store = open_store(Settings(home=home, store_url=None))
    metrics: dict[str, Any] = json.loads(store.get_bytes(version_prefix(model, 1) + METRICS_FILE))
    return metrics


def run_once() -> dict[str, Any]:
    """One ``colecionador demo`` in a new home: its wall time and figures."""
    cli = str(Path(sys.executable).with_name("colecionador"))
    with tempfile.TemporaryDirectory(prefix="demo-bench-") as tmp:
        home = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLECIONADOR_")}
        env["COLECIONADOR_HOME"] = str(home)
        t0 = time.perf_counter()
        done = subprocess.run([cli, "demo"], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise RuntimeError(f"the demo exited {done.returncode}:\n{done.stdout[-3000:]}")
        digits, backbone = _metrics(home, "digits"), _metrics(home, "digits-backbone")
        pool = POOL.search(done.stdout)
        return {
            "wall_s": wall,
            "accuracy": digits["test"]["accuracy"],
            "backbone_accuracy": backbone["test"]["accuracy"],
            "pool": f"{pool.group(1)}/{pool.group(2)}" if pool else "?",
            "temperature": (digits.get("calibration") or {}).get("temperature"),
        }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    runs = [run_once() for _ in range(args.repeats)]
    print("\n== the demo, as `make demo` runs it (a fresh home each run)")
    print(f"{'run':>4} {'wall s':>7} {'digits':>7} {'backbone':>9} {'pool':>8} {'T':>6}")
    for i, r in enumerate(runs, 1):
        t = "-" if r["temperature"] is None else f"{r['temperature']:.3g}"
        print(
            f"{i:>4} {r['wall_s']:>7.1f} {r['accuracy']:>7.3f} {r['backbone_accuracy']:>9.3f} "
            f"{r['pool']:>8} {t:>6}"
        )
    figures = {json.dumps({k: v for k, v in r.items() if k != "wall_s"}) for r in runs}
    slowest, worst = max(r["wall_s"] for r in runs), min(r["accuracy"] for r in runs)
    print(
        f"goals: wall < {GOAL_S:.0f} s {'met' if slowest < GOAL_S else 'MISSED'} "
        f"(slowest {slowest:.1f}); test accuracy >= {GOAL_ACCURACY} "
        f"{'met' if worst >= GOAL_ACCURACY else 'MISSED'} (lowest {worst:.3f}); "
        f"same figures every run: {'yes' if len(figures) == 1 else 'NO'}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
