"""The Studies pages: search (date, modality, calling AE, state), paginated; one study in full."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse

from node.web import actions, queries
from node.web.auth import Principal
from node.web.deps import context, page, require

router = APIRouter()
FILTERS = ("since", "until", "modality", "calling_ae", "state")


@router.get("/studies")
def studies(request: Request, who: Annotated[Principal, Depends(require("read"))], page_no: int = 1) -> Any:
    filters = {k: request.query_params.get(k, "") for k in FILTERS}
    found = queries.studies(context(request), filters, page_no)
    return page(request, "studies.html", who, s=found, filters=filters, title="Studies")


@router.post("/studies/{uid}/complete")
def complete(request: Request, uid: str, who: Annotated[Principal, Depends(require("complete"))]) -> Any:
    refused = actions.complete(context(request), who, uid)
    message = refused or "the study's quiet period has ended: serve completes it within a second or two"
    return RedirectResponse(f"/studies/{uid}?msg={quote(message)}", status_code=303)


@router.get("/studies/{uid}")
def study(request: Request, uid: str, who: Annotated[Principal, Depends(require("read"))]) -> Any:
    found = queries.study(context(request), uid)
    if found is None:
        raise HTTPException(404, "the node has no record of this study")
    return page(request, "study.html", who, s=found, title="Study")
