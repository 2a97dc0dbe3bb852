"""The Audit page (operators): the audit trail, newest first, filtered by event and text."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from node.audit import EVENTS
from node.web import queries
from node.web.auth import Principal
from node.web.deps import context, page, require

router = APIRouter()


@router.get("/audit")
def audit(request: Request, who: Annotated[Principal, Depends(require("audit"))]) -> Any:
    event = request.query_params.get("event") or None
    text = request.query_params.get("text") or None
    entries = queries.audit(context(request), event, text)
    return page(
        request,
        "audit.html",
        who,
        entries=entries,
        events=list(EVENTS),
        event=event or "",
        text=text or "",
        title="Audit",
    )
