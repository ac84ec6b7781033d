"""Values made safe for a JSON column."""

from __future__ import annotations

from typing import Any


def json_safe(value: Any) -> Any:
    """NaN and inf become None: PostgreSQL's JSONB rejects them and JSON has no spelling
    for them (a diverged fold's loss is the usual source)."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return json_safe(value.item())
    return value
