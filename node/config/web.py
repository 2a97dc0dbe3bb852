"""``[web]``: the web console's process, its users and bearer tokens (read by :mod:`node.web`).

Passwords and tokens are never in the config: users carry an argon2 hash (``pacs-node users hash``
prints one), tokens a SHA-256 hex digest of the token (``pacs-node users token`` makes a token and
prints both). With no user configured, ``serve`` prints a one-time login URL at start instead of
shipping a default password.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field

from node.config.base import IPAddress, Loc, Port, Seconds, Slug, _check, _Section
from node.config.tls import ConfigFile, certificate_problems

Role = Literal["viewer", "radiologist", "operator"]

_ARGON2 = _check(
    lambda v: v.startswith("$argon2"), "must be an argon2 hash ('$argon2id$...'; make one with: pacs-node users hash)"
)
_SHA256 = _check(
    lambda v: re.fullmatch(r"[0-9a-f]{64}", v) is not None,
    "must be the 64 hex digits of the token's SHA-256 (make one with: pacs-node users token)",
)


class WebUser(_Section):
    """``[[web.users]]``: a person who may log in, with one role."""

    name: Slug
    password_hash: Annotated[str, _ARGON2]
    role: Role = "viewer"


class WebToken(_Section):
    """``[[web.tokens]]``: a bearer token for scripts and Prometheus, stored as its SHA-256."""

    name: Slug
    sha256: Annotated[str, _SHA256]
    role: Role = "viewer"


class Web(_Section):
    """``[web]``: the console, triage list, JSON API and ``/metrics`` (own process, started by serve)."""

    enabled: bool = False
    bind: IPAddress = "127.0.0.1"
    port: Port = 8080
    certificate: ConfigFile | None = None
    private_key: ConfigFile | None = None
    session_minutes: Annotated[float, _check(lambda v: v > 0, "must be > 0")] = 480.0
    # Each study links to the site's viewer: {study_uid} is replaced by the Study Instance UID.
    viewer_url: str = ""
    # The Models page warns when feedback agreement falls below the card's precision by more than this.
    agreement_margin: Annotated[float, _check(lambda v: 0 <= v <= 1, "must be 0..1")] = 0.1
    # Seconds the expensive figures (overview, models) are reused before they are computed again.
    cache_seconds: Seconds = 2.0
    users: Annotated[tuple[WebUser, ...], Field(strict=False)] = ()
    tokens: Annotated[tuple[WebToken, ...], Field(strict=False)] = ()

    def _relations(self) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        if (self.certificate is None) != (self.private_key is None):
            key = "private_key" if self.private_key is None else "certificate"
            problems.append(((key,), "missing: HTTPS needs certificate and private_key (or neither: plain HTTP)"))
        elif self.certificate is not None:
            problems += certificate_problems(self.certificate, self.private_key)
        if self.viewer_url and "{study_uid}" not in self.viewer_url:
            problems.append((("viewer_url",), "must contain {study_uid}, e.g. 'https://pacs/viewer?study={study_uid}'"))
        names = [user.name for user in self.users] + [token.name for token in self.tokens]
        for i, name in enumerate(names):
            if name in names[:i]:
                problems.append((("users",), f"'{name}' is named twice (users and tokens need distinct names)"))
        return problems

    @property
    def scheme(self) -> str:
        return "https" if self.certificate is not None else "http"
