"""The pages' HTML pieces: the stylesheet, escaping, number and time formats, status badges,
the page frame, tables, images from the store."""

from __future__ import annotations

import asyncio
import html
import math
from datetime import datetime
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import Response

from services.api.deps import StoreDep

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d232b;
background:#f6f7f9}
header{background:#1d3557;color:#fff;padding:12px 24px}header a{color:#fff;text-decoration:none}
main{padding:16px 24px;max-width:1200px}h1{font-size:20px;margin:0}
h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%;box-shadow:0 1px 2px #0001}
th,td{padding:6px 10px;border-bottom:1px solid #e4e7eb;text-align:left;vertical-align:top}
th{background:#eef1f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600}
.queued{background:#e2e8f0}.training,.evaluating{background:#fde68a}
.success,.approved,.pass{background:#bbf7d0}
.failed,.rejected,.fail,.overrode{background:#fecaca}.cancelled{background:#d1d5db}
.filters a{margin-right:10px}.muted{color:#6b7280}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;background:#fff;padding:12px;
margin:0}dt{font-weight:600}dd{margin:0;word-break:break-all}
img.plot{max-width:100%;background:#fff;border:1px solid #e4e7eb}.error{color:#b91c1c}
td.clip{max-width:240px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
td.error{max-width:320px;overflow-wrap:anywhere}td.when{white-space:nowrap}
"""


def e(value: Any) -> str:
    """Escape for HTML text and attribute values; None shows as a dash."""
    return "–" if value is None else html.escape(str(value), quote=True)


def fmt(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def when(value: datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def badge(status: str) -> str:
    return f'<span class="badge {e(status)}" data-status="{e(status)}">{e(status)}</span>'


def html_page(title: str, body: str, root: str, refresh: bool = False) -> str:
    meta = '<meta http-equiv="refresh" content="10">' if refresh else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1><a href="{e(root)}/">colecionador</a> · {e(title)}</h1></header>'
        f"<main>{body}</main></body></html>"
    )


def table(
    headers: list[str], rows: str, *, table_id: str | None = None, empty: str | None = None
) -> str:
    """A table: a header cell per name, then ``rows`` (``<tr>`` markup), or one row
    spanning every column that says ``empty`` when there are none."""
    if not rows and empty is not None:
        rows = f"<tr><td colspan={len(headers)} class=muted>{empty}</td></tr>"
    head = "".join(f"<th>{h}</th>" for h in headers)
    attr = f' id="{table_id}"' if table_id else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


# ------------------------------------------------------------------------ routes
def root_path(request: Request) -> str:
    root: str = request.scope.get("root_path", "")
    return root.rstrip("/")


async def store_png(store: StoreDep, key: str) -> Response:
    try:
        png = await asyncio.to_thread(store.bytes, key)
    except Exception:  # noqa: BLE001 - absent, or the store cannot be reached
        raise HTTPException(404, f"{key} is not in the store") from None
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})
