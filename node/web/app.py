"""The web process's ASGI app: console pages, triage worklist, JSON API (``/api/v1``), health and metrics.

Routes stay thin: they check who asks (:mod:`node.web.deps`) and call the query layer
(:mod:`node.web.queries`, :mod:`node.web.results`) or an action (:mod:`node.web.actions`); no route
holds SQL. The OpenAPI document is at ``/api/v1/openapi.json``; there is no Swagger UI (it would load
scripts from the internet, and hospital networks are closed).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from node import __version__
from node.config import NodeConfig
from node.web.auth import Auth
from node.web.context import WebContext
from node.web.deps import LoginRequiredError
from node.web.routers import api, audit, failures, health, login, models, overview, studies, triage


def create_app(
    config: NodeConfig, one_time_token: str | None = None, clock: Callable[[], float] = time.time
) -> FastAPI:
    """The app for this config; ``one_time_token`` is serve's one-time login token (no users configured)."""
    app = FastAPI(
        title="pacs-node",
        version=__version__,
        description="The node's JSON API: studies, jobs (retry, cancel), the triage worklist, findings with "
        "feedback, models and peers. Authenticate with a session (the console's login) or a bearer token "
        "([[web.tokens]]); state-changing requests with a session need the X-CSRF-Token header.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    https = config.web.certificate is not None
    app.state.ctx = WebContext(config, Auth(config.web, one_time_token, clock=clock), clock=clock)

    @app.exception_handler(LoginRequiredError)
    async def login_required(request: Request, exc: LoginRequiredError) -> Response:
        path = request.url.path
        if path.startswith("/api/") or path == "/metrics":
            return JSONResponse({"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        target = path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target)}", status_code=303)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Callable[[Request], object]) -> Response:
        response: Response = await call_next(request)  # type: ignore[misc]
        # Nothing is loaded from elsewhere: every script and style ships in the package.
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"
        )
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if https:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    for router in (login, health, overview, studies, failures, triage, models, audit):
        app.include_router(router.router, include_in_schema=False)
    app.include_router(api.router, prefix="/api/v1")
    return app
