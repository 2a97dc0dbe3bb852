"""Request dependencies: who is asking (session cookie or bearer token), may they, and the CSRF check."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.templating import Jinja2Templates

from node.web.auth import SESSION_COOKIE, Principal, csrf_ok
from node.web.context import WebContext

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


class LoginRequiredError(Exception):
    """No valid session or token: the API answers 401, a page sends the browser to the login form."""


def context(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


def principal(request: Request) -> Principal:
    ctx = context(request)
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        found = ctx.auth.bearer(header[7:].strip())
        if found is None:
            raise LoginRequiredError("unknown bearer token")
        return found
    sid = request.cookies.get(SESSION_COOKIE)
    found = ctx.auth.session(sid) if sid else None
    if found is None:
        raise LoginRequiredError("not logged in, or the session expired")
    return found


def require(permission: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the principal, if it may ``permission``; state-changing requests need the CSRF token."""

    async def check(request: Request) -> Principal:
        who = principal(request)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            offered = request.headers.get("x-csrf-token")
            if offered is None and "form" in request.headers.get("content-type", ""):
                form = await request.form()
                value = form.get("csrf_token")
                offered = value if isinstance(value, str) else None
            if not csrf_ok(who, offered):
                raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        if not who.may(permission):
            raise HTTPException(403, f"the role '{who.role}' may not {permission}")
        return who

    return check


def page(request: Request, template: str, who: Principal, **values: Any) -> Any:
    """A rendered page with what every page needs (the user, the CSRF token, a message)."""
    return TEMPLATES.TemplateResponse(
        request,
        template,
        {"user": who, "csrf": who.csrf, "message": request.query_params.get("msg", ""), **values},
    )
