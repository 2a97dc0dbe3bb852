"""Association policy: who may open an association with the node.

Rules, checked by :meth:`node.receive.server.Receiver.admit` during negotiation (PS3.8 §9.3.4 reasons):

- the calling AE title must be a peer with ``allow_store = true``, and when that peer lists
  ``addresses``, the connection must come from one of them: otherwise A-ASSOCIATE-RJ
  *rejected-permanent, service-user, calling-AE-title-not-recognized* (1, 1, 3);
- the called AE title must be ours: otherwise *rejected-permanent, service-user,
  called-AE-title-not-recognized* (1, 1, 7);
- at most ``limits.max_associations`` at once, and at most the peer's own ``max_associations``: otherwise
  *rejected-transient, service-provider (presentation), local-limit-exceeded* (2, 3, 2), so the peer
  retries later (one scanner's flood cannot take every association).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from node.config import Peer

log = logging.getLogger(__name__)

# Matches no AE title (it is longer than 16 characters): every calling AE is rejected.
_NOBODY = "<no peer may send from this address>"


class Policy:
    """Which calling AE titles may send from which address; logs each refused pair once."""

    def __init__(self, peers: Sequence[Peer]) -> None:
        self._peers = [peer for peer in peers if peer.allow_store]
        self._lock = threading.Lock()
        self._logged: set[tuple[str, str, str]] = set()

    def allowed_titles(self, address: str) -> list[str]:
        """AE titles allowed to send from ``address`` (never empty, so no reader takes it for "anyone")."""
        titles = [peer.ae_title for peer in self._peers if peer.accepts_from(address)]
        return titles or [_NOBODY]

    def peer_limit(self, calling_ae: str) -> int | None:
        """The calling peer's own association limit (``max_associations``), if it has one."""
        for peer in self._peers:
            if peer.ae_title == calling_ae.strip():
                return peer.max_associations
        return None

    def permits(self, calling_ae: str, address: str) -> bool:
        return calling_ae.strip() in self.allowed_titles(address)

    def explain(self, calling_ae: str, address: str) -> str:
        """Why ``calling_ae`` from ``address`` is refused, for the log and for administrators."""
        calling_ae = calling_ae.strip()
        named = [peer for peer in self._peers if peer.ae_title == calling_ae]
        if not named:
            return f"calling AE title '{calling_ae}' is not a peer with allow_store = true"
        return f"peer '{named[0].name}' ({calling_ae}) may not send from {address} (see its addresses)"

    def log_rejection(self, calling_ae: str, called_ae: str, address: str, reason: str) -> None:
        """One WARNING per (calling AE, address, reason); later repeats at DEBUG (a retrying peer floods)."""
        key = (calling_ae, address, reason)
        with self._lock:
            first = key not in self._logged
            self._logged.add(key)
        level = logging.WARNING if first else logging.DEBUG
        log.log(level, "association from %s (%s) to %s rejected: %s", calling_ae, address, called_ae, reason)
