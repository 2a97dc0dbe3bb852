"""Who is asking, and may they: users with argon2 hashes, bearer tokens, sessions, CSRF and the login limit.

- Roles give permissions: ``viewer`` reads; ``radiologist`` reads and gives feedback on findings;
  ``operator`` reads, retries and cancels jobs, forces a study complete and reads the audit trail. The
  one-time login (no user configured) may do everything.
- A session is a random id in an HttpOnly, SameSite=Strict cookie (Secure under TLS), kept in this
  process's memory (a restart of the web process logs everyone out), with its own CSRF token that every
  state-changing request must echo (form field ``csrf_token`` or header ``X-CSRF-Token``). Requests with
  a bearer token carry no cookie, so they need no CSRF token.
- Failed logins are counted per client address: after five within a minute, every login attempt from
  that address is answered 429 until the minute has passed.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from node.config.web import Web

PERMISSIONS: dict[str, frozenset[str]] = {
    "viewer": frozenset({"read"}),
    "radiologist": frozenset({"read", "feedback"}),
    "operator": frozenset({"read", "retry", "cancel", "complete", "audit"}),
    "one-time": frozenset({"read", "feedback", "retry", "cancel", "complete", "audit"}),
}
SESSION_COOKIE = "pacs_node_session"
FAILED_LOGIN_LIMIT = 5
FAILED_LOGIN_WINDOW_S = 60.0

_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user name is unknown, so that a wrong name takes as long as a wrong password."""
    return _hasher.hash(secrets.token_hex(8))


def hash_password(password: str) -> str:
    """The argon2id hash to put in ``[[web.users]]`` ``password_hash``."""
    return _hasher.hash(password)


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """A logged-in user or a token's holder."""

    name: str
    role: str
    session: str | None = None  # the session id; None for a bearer token
    csrf: str = ""

    def may(self, permission: str) -> bool:
        return permission in PERMISSIONS.get(self.role, frozenset())


@dataclass
class _Session:
    principal: Principal
    expires: float


class Auth:
    """Users, tokens, sessions and the login limit of one web process (thread-safe)."""

    def __init__(self, web: Web, one_time_token: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.web = web
        self._clock = clock
        self._users = {user.name: user for user in web.users}
        self._tokens = {token.sha256: token for token in web.tokens}
        self._one_time = one_time_token or None
        self._sessions: dict[str, _Session] = {}
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    @property
    def lifetime_s(self) -> float:
        return self.web.session_minutes * 60.0

    def limited(self, address: str) -> bool:
        """Whether this address has failed :data:`FAILED_LOGIN_LIMIT` times within the last minute."""
        now = self._clock()
        with self._lock:
            times = self._failures.get(address)
            while times and times[0] <= now - FAILED_LOGIN_WINDOW_S:
                times.popleft()
            return times is not None and len(times) >= FAILED_LOGIN_LIMIT

    def _failed(self, address: str) -> None:
        with self._lock:
            self._failures.setdefault(address, deque()).append(self._clock())

    def login(self, name: str, password: str, address: str) -> Principal | None:
        """A new session for a correct name and password; ``None`` (a counted failure) otherwise."""
        user = self._users.get(name)
        try:
            _hasher.verify(user.password_hash if user is not None else _dummy_hash(), password)
            ok = user is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            ok = False
        if not ok or user is None:
            self._failed(address)
            return None
        return self._open(user.name, user.role)

    def login_once(self, token: str, address: str) -> Principal | None:
        """A session from the one-time login URL's token, which then stops working."""
        with self._lock:
            expected, ok = self._one_time, False
            if expected is not None and hmac.compare_digest(expected.encode(), token.encode()):
                self._one_time, ok = None, True
        if not ok:
            self._failed(address)
            return None
        return self._open("one-time-login", "one-time")

    def _open(self, name: str, role: str) -> Principal:
        sid = secrets.token_urlsafe(32)
        principal = Principal(name, role, sid, secrets.token_urlsafe(32))
        with self._lock:
            now = self._clock()
            self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
            self._sessions[sid] = _Session(principal, now + self.lifetime_s)
        return principal

    def session(self, sid: str) -> Principal | None:
        """The session's principal, or ``None`` when unknown or expired (expired ones are forgotten)."""
        with self._lock:
            found = self._sessions.get(sid)
            if found is None:
                return None
            if found.expires <= self._clock():
                del self._sessions[sid]
                return None
            return found.principal

    def logout(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def bearer(self, token: str) -> Principal | None:
        """The holder of a configured bearer token, or ``None``."""
        found = self._tokens.get(token_sha256(token))
        return None if found is None else Principal(found.name, found.role)


def csrf_ok(principal: Principal, offered: str | None) -> bool:
    """Whether a state-changing request may go on: a bearer token needs nothing, a session its token."""
    if principal.session is None:
        return True
    return offered is not None and hmac.compare_digest(principal.csrf.encode(), offered.encode())
