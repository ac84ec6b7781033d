"""A version's page: its model card, rendered now (render_model_card, from the version
folder's documents and the database) so its promotions are the ones recorded to this day,
with links to model_card.md as written with the version, the lineage, the job, and the
plots. Markdown becomes HTML through markdown-it-py with raw HTML off: whatever a data set
or a request put in the card shows as text."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from markdown_it import MarkdownIt

from services.api.deps import READ_PAGE, DbDep, StoreDep
from services.api.markup import e, html_page, root_path
from services.api.schemas import ModelName, VersionNo
from services.db import repo
from services.registry.card_inputs import CARD_DOCUMENTS, version_card
from services.registry.model_card import render_model_card
from services.store.artifacts import METRICS_FILE, MODEL_CARD_FILE, RELIABILITY_FILE, version_prefix

router = APIRouter(include_in_schema=False, dependencies=[READ_PAGE])

_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")
LIVE = "live: every alias move to this version until this page was drawn"


def card_html(markdown: str) -> str:
    """The card's Markdown as HTML (raw HTML in it escaped, unsafe links not made)."""
    html: str = _MARKDOWN.render(markdown)
    return html


@router.get("/ui/models/{name}/versions/{version}", response_class=HTMLResponse)
async def version_page(
    request: Request, name: ModelName, version: VersionNo, db: DbDep, store: StoreDep
) -> HTMLResponse:
    root = root_path(request)
    if await db(repo.get_version, name, version) is None:
        body = f"<p>No version {version} of model {e(name)}.</p>"
        return HTMLResponse(html_page("not found", body, root), status_code=404)
    prefix = version_prefix(name, version)
    documents = {n: await asyncio.to_thread(store.json, prefix + n) for n in CARD_DOCUMENTS}

    def card(s: Any) -> tuple[str, int] | None:
        mv = repo.get_version(s, name, version)
        if mv is None:
            return None
        return render_model_card(version_card(s, mv, documents, LIVE)), mv.job_id

    found = await db(card)
    if found is None:  # gone between the two reads
        return HTMLResponse(html_page("not found", "<p>No such version.</p>", root), 404)
    markdown, job_id = found
    base = f"{e(root)}/models/{e(name)}/versions/{version}"
    ui = f"{e(root)}/ui/models/{e(name)}/versions/{version}"
    links = (
        f'<p class="muted"><a href="{base}/{MODEL_CARD_FILE}">{MODEL_CARD_FILE}</a> (as written '
        f'with the version) · <a href="{base}/lineage">lineage</a> · '
        f'<a href="{e(root)}/ui/jobs/{job_id}">job {job_id}</a></p>'
    )
    plots = f'<img class="plot" alt="confusion matrix" src="{ui}/confusion_matrix.png">'
    if (documents.get(METRICS_FILE) or {}).get("calibration"):
        plots += f'<img class="plot" alt="reliability diagram" src="{ui}/{RELIABILITY_FILE}">'

    body = links + f'<article id="model-card">{card_html(markdown)}</article>' + plots
    return HTMLResponse(html_page(f"{name} v{version}", body, root))
