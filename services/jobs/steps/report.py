"""What every step shares: the progress callback's type and a report written to the store."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from services.store.artifacts import (
    report_key,
)
from services.store.storage import Store

Say = Callable[[str], None]


def put_report(store: Store, job_id: int, name: str, payload: bytes | dict[str, Any]) -> None:
    """reports/job-<id>/<name>: kept for every job, failed ones too."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload, indent=2).encode()
    store.put_bytes(report_key(job_id, name), data)
