"""The Failures page: dead jobs and jobs waiting for a retry; retry or cancel one, or all of a peer."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse

from node.web import actions, queries
from node.web.auth import Principal
from node.web.deps import context, page, require

router = APIRouter()


def _back(message: str) -> RedirectResponse:
    return RedirectResponse(f"/failures?msg={quote(message)}", status_code=303)


@router.get("/failures")
def failures(request: Request, who: Annotated[Principal, Depends(require("read"))]) -> Any:
    return page(request, "failures.html", who, f=queries.failures(context(request)), title="Failures")


@router.post("/failures/jobs/{job_id}/retry")
def retry(request: Request, job_id: int, who: Annotated[Principal, Depends(require("retry"))]) -> Any:
    refused = actions.retry(context(request), who, job_id)
    return _back(refused or f"job {job_id} queued again")


@router.post("/failures/jobs/{job_id}/cancel")
def cancel(request: Request, job_id: int, who: Annotated[Principal, Depends(require("cancel"))]) -> Any:
    refused = actions.cancel(context(request), who, job_id)
    return _back(refused or f"job {job_id} cancelled")


@router.post("/failures/peers/{peer}/retry")
def retry_peer(request: Request, peer: str, who: Annotated[Principal, Depends(require("retry"))]) -> Any:
    done, refused = actions.retry_peer(context(request), who, peer)
    return _back(f"{done} sends to {peer} queued again" + (f"; {len(refused)} refused" if refused else ""))


@router.post("/failures/peers/{peer}/cancel")
def cancel_peer(request: Request, peer: str, who: Annotated[Principal, Depends(require("cancel"))]) -> Any:
    count = actions.cancel_peer(context(request), who, peer)
    return _back(f"{count} sends to {peer} cancelled")
