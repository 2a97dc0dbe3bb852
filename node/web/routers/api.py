"""The JSON API under ``/api/v1`` (OpenAPI at ``/api/v1/openapi.json``): the same query layer as the pages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from node.web import actions, queries, results
from node.web.auth import Principal
from node.web.deps import context, require
from node.web.keyimage import KeyImageError

router = APIRouter(tags=["api"])
Reader = Annotated[Principal, Depends(require("read"))]


class FeedbackIn(BaseModel):
    verdict: Literal["confirm", "reject"]
    reason: str = Field(default="", description="for a rejection: false positive, wrong size, wrong location, other")
    comment: str = Field(default="", max_length=2000)


@router.get("/overview")
def overview(request: Request, who: Reader) -> dict[str, Any]:
    return queries.overview(context(request))


@router.get("/studies")
def studies(
    request: Request,
    who: Reader,
    page: int = 1,
    since: str = "",
    until: str = "",
    modality: str = "",
    calling_ae: str = "",
    state: str = "",
) -> dict[str, Any]:
    filters = {"since": since, "until": until, "modality": modality, "calling_ae": calling_ae, "state": state}
    return queries.studies(context(request), filters, page)


@router.get("/studies/{uid}")
def study(request: Request, uid: str, who: Reader) -> dict[str, Any]:
    found = queries.study(context(request), uid)
    if found is None:
        raise HTTPException(404, "the node has no record of this study")
    return found


@router.post("/studies/{uid}/complete")
def complete(request: Request, uid: str, who: Annotated[Principal, Depends(require("complete"))]) -> dict[str, str]:
    return _done(actions.complete(context(request), who, uid))


@router.get("/jobs")
def jobs(
    request: Request, who: Reader, state: str | None = None, kind: str | None = None, limit: int = 100
) -> list[Any]:
    if state is not None and state not in ("queued", "running", "done", "dead"):
        raise HTTPException(422, "state must be queued, running, done or dead")
    return queries.jobs(context(request), state, kind, min(max(limit, 1), 1000))


@router.get("/failures")
def failures(request: Request, who: Reader) -> dict[str, Any]:
    return queries.failures(context(request))


def _done(refused: str | None) -> dict[str, str]:
    if refused is not None:
        raise HTTPException(409, refused)
    return {"status": "ok"}


@router.post("/jobs/{job_id}/retry")
def retry(request: Request, job_id: int, who: Annotated[Principal, Depends(require("retry"))]) -> dict[str, str]:
    return _done(actions.retry(context(request), who, job_id))


@router.post("/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: int, who: Annotated[Principal, Depends(require("cancel"))]) -> dict[str, str]:
    return _done(actions.cancel(context(request), who, job_id))


@router.get("/peers")
def peers(request: Request, who: Reader) -> list[dict[str, Any]]:
    return queries.peers(context(request))


@router.post("/peers/{peer}/retry")
def retry_peer(request: Request, peer: str, who: Annotated[Principal, Depends(require("retry"))]) -> dict[str, Any]:
    done, refused = actions.retry_peer(context(request), who, peer)
    return {"retried": done, "refused": refused}


@router.post("/peers/{peer}/cancel")
def cancel_peer(request: Request, peer: str, who: Annotated[Principal, Depends(require("cancel"))]) -> dict[str, Any]:
    return {"cancelled": actions.cancel_peer(context(request), who, peer)}


@router.get("/worklist")
def worklist(
    request: Request,
    who: Reader,
    priority: str = "",
    model: str = "",
    since: str = "",
    offset: int = 0,
    limit: int = 100,
) -> list[Any]:
    day = queries.day_start(since)
    return results.triage(
        context(request), priority or None, model or None, day, max(offset, 0), min(max(limit, 1), 500)
    )


@router.get("/analyses/{analysis}/series/{series}/findings/{number}/key.png", response_class=Response)
def key_image(request: Request, analysis: int, series: str, number: int, who: Reader) -> Response:
    try:
        png = results.key_image(context(request), analysis, series, number)
    except KeyImageError as exc:
        raise HTTPException(404, str(exc)) from None
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/analyses/{analysis}/series/{series}/findings/{number}/feedback")
def feedback(
    request: Request,
    analysis: int,
    series: str,
    number: int,
    body: FeedbackIn,
    who: Annotated[Principal, Depends(require("feedback"))],
) -> dict[str, str]:
    ctx = context(request)
    refused = actions.feedback(ctx, who, analysis, series, number, body.verdict, body.reason, body.comment)
    if refused is not None:
        raise HTTPException(422 if "reason" in refused or "verdict" in refused else 404, refused)
    return {"status": "ok"}


@router.get("/feedback.csv", response_class=Response)
def feedback_csv(request: Request, who: Reader) -> Response:
    return Response(
        context(request).feedback.csv(),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="feedback.csv"'},
    )


@router.get("/models")
def models(request: Request, who: Reader) -> list[dict[str, Any]]:
    return results.models(context(request))


@router.get("/audit")
def audit(
    request: Request,
    who: Annotated[Principal, Depends(require("audit"))],
    event: str = "",
    text: str = "",
    limit: int = 200,
) -> list[dict[str, Any]]:
    return queries.audit(context(request), event or None, text or None, min(max(limit, 1), 5000))
