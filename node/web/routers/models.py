"""The Models page: each card and its live figures per version, agreement from feedback with a warning."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from node.web import results
from node.web.auth import Principal
from node.web.deps import context, page, require

router = APIRouter()


@router.get("/models")
def models(request: Request, who: Annotated[Principal, Depends(require("read"))]) -> Any:
    return page(request, "models.html", who, models=results.models(context(request)), title="Models")
