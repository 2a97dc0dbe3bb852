"""How often a busy association's DUL thread looks at its socket.

pynetdicom's DUL thread polls: after a loop that found nothing to do (no PDU fully arrived yet, no
primitive to send), it sleeps ``DULServiceProvider._run_loop_delay`` seconds, 1 ms by default, before
looking again. A C-STORE meets that sleep two or three times: waiting for the next request after our
response, between PDUs that are not complete yet, and before our response leaves. At about 3.7 ms an
instance for pynetdicom's receive path alone that is a third of the time. pynetdicom's own comment on
the attribute invites tuning it ("higher will use less CPU when idle, but will also increase the latency").

Measured on the 2-core VM (DCMTK storescu, 300 x 0.53 MB CT, receive and discard): 1 ms gives about 230
instances/s, 0.1 ms about 314. The price is CPU while idle: an open association that sends nothing costs
about 7 % of a core more at 0.1 ms. So :class:`Pacer` gives the short delay to an association while it
carries DIMSE messages and gives pynetdicom's default back once it has been quiet for ``idle_after_s``
(a modality that keeps its association open between series then costs what pynetdicom costs).

History: reverted once because tests/e2e/test_disk_full.py then saw C-STORE responses stall for 10 s.
The cause was not here but in the tests' pynetdicom scanner: its reactor thread can take a response
that comes back fast off the queue its send waits on, and the send then waits for its whole DIMSE
timeout (10 s); see :func:`node.send.association.keep_stolen_responses`, which the node's sender and
the test scanners now use. A faster receiver made that race likelier, not the cause of it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pynetdicom import evt

log = logging.getLogger(__name__)

BUSY_DELAY_S = 0.0001
_ATTRIBUTE = "_run_loop_delay"


class Pacer:
    """Short DUL loop delay for associations that are carrying messages, pynetdicom's default otherwise.

    Parameters
    ----------
    idle_after_s
        An association with no DIMSE message for this long goes back to pynetdicom's default delay.
    busy_delay_s
        The delay while busy.
    """

    def __init__(self, idle_after_s: float = 1.0, busy_delay_s: float = BUSY_DELAY_S) -> None:
        self.idle_after_s = idle_after_s
        self.busy_delay_s = busy_delay_s
        self._lock = threading.Lock()
        # id(assoc) -> (assoc, its own delay to give back, monotonic time of its last message)
        self._busy: dict[int, tuple[Any, float, float]] = {}
        self._missing_logged = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def bindings(self) -> list[tuple[evt.EventType, Any]]:
        """Notification handlers (they add to, never replace, the SCP's own)."""
        return [
            (evt.EVT_ACCEPTED, self._active),
            (evt.EVT_DIMSE_RECV, self._active),
            (evt.EVT_CONN_CLOSE, self._closed),
        ]

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="dul-pacer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    @property
    def busy(self) -> int:
        """Associations running at the short delay now."""
        with self._lock:
            return len(self._busy)

    def _active(self, event: evt.Event) -> None:
        assoc = event.assoc
        now = time.monotonic()
        with self._lock:
            entry = self._busy.get(id(assoc))
            if entry is not None:
                self._busy[id(assoc)] = (assoc, entry[1], now)
                return
            own = getattr(assoc.dul, _ATTRIBUTE, None)
            if not isinstance(own, int | float):
                if not self._missing_logged:
                    self._missing_logged = True
                    log.warning("this pynetdicom has no DUL loop delay to tune: receiving runs at its own pace")
                return
            self._busy[id(assoc)] = (assoc, float(own), now)
        setattr(assoc.dul, _ATTRIBUTE, self.busy_delay_s)

    def _closed(self, event: evt.Event) -> None:
        with self._lock:
            self._busy.pop(id(event.assoc), None)

    def relax_idle(self, now: float | None = None) -> int:
        """Give pynetdicom's default delay back to associations quiet for ``idle_after_s``; return how many."""
        now = time.monotonic() if now is None else now
        with self._lock:
            quiet = [key for key, (_, _, last) in self._busy.items() if now - last >= self.idle_after_s]
            relaxed = [self._busy.pop(key) for key in quiet]
        for assoc, own, _ in relaxed:
            setattr(assoc.dul, _ATTRIBUTE, own)
        return len(relaxed)

    def _run(self) -> None:
        while not self._stop.wait(min(0.25, self.idle_after_s / 2)):
            self.relax_idle()
