"""The Triage list: studies with findings by suggested priority, key images, explanations, feedback."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from node.web import actions, queries, results
from node.web.auth import Principal
from node.web.deps import context, page, require
from node.web.feedback import REASONS
from node.web.triage import PRIORITIES

router = APIRouter()


@router.get("/triage")
def triage(request: Request, who: Annotated[Principal, Depends(require("read"))], page_no: int = 1) -> Any:
    priority = request.query_params.get("priority") or None
    model = request.query_params.get("model") or None
    since = queries.day_start(request.query_params.get("since"))
    page_no = max(1, page_no)
    items = results.triage(context(request), priority, model, since, (page_no - 1) * results.PAGE, results.PAGE)
    filters = {"priority": priority or "", "model": model or "", "since": request.query_params.get("since", "")}
    return page(
        request,
        "triage.html",
        who,
        items=items,
        filters=filters,
        priorities=PRIORITIES,
        reasons=REASONS,
        page_no=page_no,
        more=len(items) == results.PAGE,
        title="Triage",
    )


@router.post("/triage/feedback")
def feedback(
    request: Request,
    who: Annotated[Principal, Depends(require("feedback"))],
    analysis: Annotated[int, Form()],
    series: Annotated[str, Form()],
    number: Annotated[int, Form()],
    verdict: Annotated[str, Form()],
    reason: Annotated[str, Form()] = "",
    comment: Annotated[str, Form()] = "",
) -> Response:
    refused = actions.feedback(context(request), who, analysis, series, number, verdict, reason, comment)
    message = refused or f"finding {number}: {verdict} recorded"
    return RedirectResponse(f"/triage?msg={quote(message)}#a{analysis}-{number}", status_code=303)
