"""Login (name and password, or serve's one-time URL), logout; failed logins limited per address."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from node.web.auth import SESSION_COOKIE, Principal
from node.web.context import WebContext
from node.web.deps import TEMPLATES, context, require

router = APIRouter()
log = logging.getLogger(__name__)


def _record(ctx: WebContext, event: str, outcome: str = "success", **fields: object) -> None:
    """An audit record; one that cannot be written is logged, and the login goes on (as the receiver does)."""
    try:
        ctx.audit.record(event, outcome, **fields)
    except OSError as exc:
        log.error("cannot write the audit trail %s: %s", ctx.audit.path, exc)


def _address(request: Request) -> str:
    return request.client.host if request.client is not None else "?"


def _safe(target: str) -> str:
    """Only a path on this site (never an absolute URL someone slipped into ?next=)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def _form(request: Request, error: str = "", status: int = 200) -> Response:
    return TEMPLATES.TemplateResponse(
        request,
        "login.html",
        {"user": None, "error": error, "next": _safe(request.query_params.get("next", "/"))},
        status_code=status,
    )


def _session(request: Request, who: Principal, target: str) -> Response:
    ctx = context(request)
    _record(ctx, "user-login", user=who.name, role=who.role, address=_address(request))
    response = RedirectResponse(_safe(target), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        who.session or "",
        max_age=int(ctx.auth.lifetime_s),
        httponly=True,
        samesite="strict",
        secure=ctx.config.web.certificate is not None,
        path="/",
    )
    return response


def _too_many(request: Request) -> Response:
    return _form(request, "too many failed logins from this address: wait a minute", 429)


@router.get("/login")
def login_form(request: Request, token: str | None = None) -> Response:
    if token is None:
        return _form(request)
    ctx, address = context(request), _address(request)
    if ctx.auth.limited(address):
        return _too_many(request)
    who = ctx.auth.login_once(token, address)
    if who is None:
        _record(ctx, "user-login-failed", "minor failure", user="one-time-login", address=address)
        return _form(request, "this one-time login link is not valid (it works once)", 401)
    return _session(request, who, "/")


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    ctx, address = context(request), _address(request)
    if ctx.auth.limited(address):
        _record(ctx, "user-login-failed", "minor failure", user=username[:64], address=address, limited=True)
        return _too_many(request)
    who = ctx.auth.login(username, password, address)
    if who is None:
        _record(ctx, "user-login-failed", "minor failure", user=username[:64], address=address)
        return _form(request, "wrong user name or password", 401)
    return _session(request, who, next)


@router.post("/logout")
def logout(request: Request, who: Annotated[Principal, Depends(require("read"))]) -> Response:
    ctx = context(request)
    if who.session is not None:
        ctx.auth.logout(who.session)
        _record(ctx, "user-logout", user=who.name, address=_address(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
