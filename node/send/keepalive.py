"""An association to one peer kept open across batches, released when idle, and its INFO line.

Opening an association costs a TCP connection and a negotiation (a few ms here, more over a WAN or TLS);
the router queues forwards a few at a time while a study still arrives, so a sender that opened one per
batch paid that for every handful of instances. A :class:`HeldAssociation` keeps the
:class:`~node.send.requestor.Requestor` after a batch and gives it to the next batch when:

- it is still open, and the peer has said nothing since the last answer (:meth:`Requestor.usable`: a peer
  that released or aborted it while idle is noticed before anything is sent), and
- every presentation context the batch proposes was proposed on it (so the peer's answer for each is
  already known: accepted, or refused and the file transcoded), and each SOP class of the batch has an
  accepted context (a class the peer refused gets a new negotiation, in case the peer was set up since).

Otherwise the held association is released and a new one opened with the batch's contexts. Whoever holds
it releases it after :data:`IDLE_RELEASE_S` without a batch (a peer's association slots are few: one
must not be held forever by a node with nothing to send) and when stopping.

Logs: one INFO line per association, at its release (or loss), with the totals of every batch it carried:
instances tried, sent, failed, not sent (no answer on it: resent on a new one or retried later),
transcoded, the seconds the batches took and how many batches. Per batch, a DEBUG line.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence

from pynetdicom.presentation import PresentationContext

from node.send.association import ScuSettings
from node.send.destination import Destination
from node.send.requestor import Opened, Requestor, request_association

__all__ = ["IDLE_RELEASE_S", "HeldAssociation"]

log = logging.getLogger("node.send.scu")  # the association lines stay where operators (and tests) look

# Seconds an association may stay open with nothing to send before it is released: long enough to carry
# the next batch of a study still arriving (the router queues forwards every ~50 ms), short enough that a
# peer's association slot is not held forever by a node that has nothing to send.
IDLE_RELEASE_S = 2.0


def _pairs(contexts: Sequence[PresentationContext]) -> frozenset[tuple[str, str]]:
    return frozenset((str(cx.abstract_syntax), str(ts)) for cx in contexts for ts in cx.transfer_syntax)


class HeldAssociation:
    """At most one open association to ``destination``, reused while the batches' contexts allow.

    Used by one thread at a time (each sender thread has its own).

    Parameters
    ----------
    destination, settings
        The peer, and how associations to it are opened.
    clock
        Monotonic seconds; decides idleness (tests inject one).
    """

    def __init__(
        self, destination: Destination, settings: ScuSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.destination = destination
        self.settings = settings
        self._clock = clock
        self.requestor: Requestor | None = None
        self.opened = 0  # associations established so far (tests and the log read it)
        self.used_at = 0.0  # when the last batch ended
        self.last_message_id = 0  # Message IDs go on across the batches of one association
        self.opening_since: float | None = None  # while a new association is being requested (see waiting_for)
        self._proposed: frozenset[tuple[str, str]] = frozenset()
        self._totals: Counter[str] = Counter()
        self._busy_s = 0.0
        self._opened_at = 0.0

    @property
    def is_open(self) -> bool:
        """Whether an association is held (it may still turn out lost at its next use)."""
        return self.requestor is not None and self.requestor.is_open

    def waiting_for(self) -> float:
        """Seconds this one has been waiting for a new association to be accepted; 0 when it is not."""
        since = self.opening_since
        return 0.0 if since is None else self._clock() - since

    def idle_for(self) -> float:
        """Seconds since the last batch ended; 0 when nothing is held."""
        return self._clock() - self.used_at if self.is_open else 0.0

    def _reusable(self, contexts: Sequence[PresentationContext]) -> bool:
        requestor = self.requestor
        if requestor is None or not requestor.is_open or not _pairs(contexts) <= self._proposed:
            return False
        accepted = {str(cx.abstract_syntax) for cx in requestor.accepted}
        if not all(str(cx.abstract_syntax) in accepted for cx in contexts):
            return False
        return requestor.usable()

    def obtain(self, contexts: Sequence[PresentationContext]) -> tuple[Opened, bool]:
        """An association for a batch proposing ``contexts``: ``(opening, reused)``.

        The held one when it can carry the batch (``reused``), else a new one (the held one released
        first). A failed opening holds nothing; it is returned as :func:`request_association` gave it.
        """
        if self._reusable(contexts):
            assert self.requestor is not None
            return Opened(self.requestor), True
        self.release()
        self.opening_since = self._clock()
        try:
            opening = request_association(self.destination, contexts, self.settings)
        finally:
            self.opening_since = None
        if opening.requestor is not None:
            self.requestor = opening.requestor
            self._proposed = _pairs(contexts)
            self.opened += 1
            self.last_message_id = 0
            self._opened_at = self.used_at = self._clock()
        return opening, False

    def record(self, counts: Counter[str], seconds: float, lost: str = "") -> None:
        """Add a batch's counts (tried, sent, failed, not sent, transcoded) to the association's totals;
        when the association was ``lost`` on the way, log its line now (it is closed already)."""
        self._totals.update(counts)
        self._totals["batches"] += 1
        self._busy_s += seconds
        self.used_at = self._clock()
        log.debug(
            "C-STORE to %s: batch of %d instances, %d sent in %.2f s%s",
            self.destination,
            counts["tried"],
            counts["sent"],
            seconds,
            f" ({lost})" if lost else "",
        )
        if lost:
            self._done(lost)

    def release(self, why: str = "") -> None:
        """Release the held association (A-RELEASE; an abort when the peer does not answer) and log its line;
        nothing when none is held. Never raises."""
        if self.requestor is None:
            return
        self.requestor.release()  # nothing when it was lost or aborted
        self._done(why)

    def _done(self, why: str) -> None:
        totals = self._totals
        if self.requestor is not None and totals["batches"]:
            log.info(
                "C-STORE to %s: %d instances, %d sent, %d failed, %d not sent, %d transcoded in %.2f s"
                " (%d batches on one association, open %.2f s)%s",
                self.destination,
                totals["tried"],
                totals["sent"],
                totals["failed"],
                totals["not sent"],
                totals["transcoded"],
                self._busy_s,
                totals["batches"],
                self._clock() - self._opened_at,
                f" ({why})" if why else "",
            )
        self.requestor = None
        self._proposed = frozenset()
        self._totals = Counter()
        self._busy_s = 0.0
