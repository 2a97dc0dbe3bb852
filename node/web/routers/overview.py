"""The Overview page: associations, arrivals per minute, queues, children alive, peers, disk, failures."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from node.web import queries
from node.web.auth import Principal
from node.web.deps import context, page, require

router = APIRouter()


@router.get("/")
def overview(request: Request, who: Annotated[Principal, Depends(require("read"))]) -> Any:
    return page(request, "overview.html", who, o=queries.overview(context(request)), title="Overview")
