"""``/healthz`` (the process answers), ``/readyz`` (the node can do its work: 503 with the reasons) and
``/metrics`` (Prometheus; needs a login or a bearer token, any role)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from node.store.browse import writable
from node.store.disk import free_mb
from node.web.auth import Principal
from node.web.deps import context, require
from node.web.metrics import exposition

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def problems(request: Request) -> list[str]:
    """Why the node is not ready (empty when it is)."""
    ctx = context(request)
    found: list[str] = []
    why = ctx.index.writable()
    if why:
        found.append(why)
    why = writable(ctx.config.node.jobs_path, "job store")
    if why:
        found.append(why)
    floor = ctx.config.limits.min_free_disk_mb
    free = free_mb(ctx.data_dir)
    if free < floor:
        found.append(f"disk: {free:.0f} MB free, below the floor of {floor} MB (stores are refused)")
    status = ctx.status()
    if status is None:
        found.append("serve is not running (no fresh status.json)")
    else:
        if status.get("workers_alive", 0) < status.get("workers_configured", 0):
            found.append(f"workers: {status.get('workers_alive')} of {status.get('workers_configured')} alive")
        if not status.get("sender_alive"):
            found.append("the sender process is not alive")
    return found


@router.get("/readyz")
def readyz(request: Request) -> Response:
    found = problems(request)
    if found:
        return JSONResponse({"status": "not ready", "reasons": found}, status_code=503)
    return JSONResponse({"status": "ready", "reasons": []})


@router.get("/metrics")
def metrics(request: Request, who: Annotated[Principal, Depends(require("read"))]) -> Response:
    body, content_type = exposition(context(request))
    return Response(body, media_type=content_type)
