"""model_card.md, written into the version folder as the version is committed."""

from __future__ import annotations

import json

from sqlalchemy.orm import Session

from services.db.models import ModelVersion
from services.registry.card_inputs import CARD_DOCUMENTS, version_card
from services.registry.model_card import render_model_card
from services.store.artifacts import MODEL_CARD_FILE, version_prefix
from services.store.storage import Store


def write_model_card(s: Session, store: Store, mv: ModelVersion, files: dict[str, bytes]) -> str:
    """Render the card of the reserved version ``mv`` from the documents the job is
    versioning (``files``) and the database as the commit's transaction ``s`` sees it
    (the gate's promotion included), and put it in the store; its URI. The caller uploads
    it before the commit, so a committed version always has its card."""
    documents = {n: json.loads(files[n]) for n in CARD_DOCUMENTS if n in files}
    as_of = (
        f"when v{mv.version} was committed by job {mv.job_id}; later moves are on the "
        f"version's page and at GET /models/{mv.model_name}/aliases"
    )
    card = render_model_card(version_card(s, mv, documents, as_of))
    return store.put_bytes(
        version_prefix(mv.model_name, mv.version) + MODEL_CARD_FILE, card.encode()
    )
