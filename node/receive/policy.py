"""Association policy: who may open an association with the node.

Rules, checked by pynetdicom's acceptor during negotiation (PS3.8 §9.3.4 reasons):

- the calling AE title must be a peer with ``allow_store = true``, and when that peer lists
  ``addresses``, the connection must come from one of them: otherwise A-ASSOCIATE-RJ
  *rejected-permanent, service-user, calling-AE-title-not-recognized* (1, 1, 3);
- the called AE title must be ours: otherwise *rejected-permanent, service-user,
  called-AE-title-not-recognized* (1, 1, 7);
- at most ``limits.max_associations`` at once, and at most the peer's own ``max_associations``: otherwise
  *rejected-transient, service-provider (presentation), local-limit-exceeded* (2, 3, 2), so the peer
  retries later (one scanner's flood cannot take every association).

pynetdicom checks the calling AE against :attr:`ApplicationEntity.require_calling_aet`, a list without
the connection's address. :class:`PolicyAE` answers that property for the association being negotiated
(negotiation runs on the association's own thread), so the address rule uses pynetdicom's own check and
reason code instead of a second, hand-made rejection path. ``maximum_associations`` is answered the same
way: for a peer at its own limit it is 0, which pynetdicom's limit check turns into (2, 3, 2).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from pynetdicom import AE
from pynetdicom.association import Association

from node.config import Peer

log = logging.getLogger(__name__)

# Matches no AE title (it is longer than 16 characters), so pynetdicom rejects every calling AE.
_NOBODY = "<no peer may send from this address>"


class Policy:
    """Which calling AE titles may send from which address; logs each refused pair once."""

    def __init__(self, peers: Sequence[Peer]) -> None:
        self._peers = [peer for peer in peers if peer.allow_store]
        self._lock = threading.Lock()
        self._logged: set[tuple[str, str, str]] = set()

    def allowed_titles(self, address: str) -> list[str]:
        """AE titles allowed to send from ``address`` (never empty: empty means "anyone" to pynetdicom)."""
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


class PolicyAE(AE):
    """A pynetdicom AE whose ``require_calling_aet`` depends on the address being negotiated."""

    def __init__(self, ae_title: str, policy: Policy) -> None:
        super().__init__(ae_title=ae_title)
        self.policy = policy

    @property
    def require_calling_aet(self) -> list[str]:
        current = threading.current_thread()
        if isinstance(current, Association) and current.is_acceptor:
            return self.policy.allowed_titles(str(current.requestor.address))
        return [_NOBODY]  # outside a negotiation nobody is allowed: fail closed

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        raise AttributeError("the node's association policy comes from the config's peers")

    @property
    def maximum_associations(self) -> int:
        """The node's limit; 0 while negotiating for a peer that already has its own limit's worth open."""
        limit: int = self._maximum_associations
        current = threading.current_thread()
        if isinstance(current, Association) and current.is_acceptor:
            calling = current.requestor.ae_title.strip()
            own = self.policy.peer_limit(calling)
            if own is not None:
                others = [
                    a
                    for a in self.active_associations
                    if a is not current
                    and a.is_acceptor
                    and a.is_established
                    and a.requestor.ae_title.strip() == calling
                ]
                if len(others) >= own:
                    return 0
        return limit

    @maximum_associations.setter
    def maximum_associations(self, value: int) -> None:
        self._maximum_associations = max(1, value)
