"""The SCU's association settings, and a pynetdicom fix the test scanners still need.

- :class:`ScuSettings`: our AE title, timeouts, maximum PDU and stall retries (:meth:`ScuSettings.from_config`
  takes them from ``[limits]``). The associations themselves are :mod:`node.send.requestor`'s (a plain
  socket, no pynetdicom threads).
- :data:`TIMEOUT_SLACK`: an attempt that ended this close to its timeout counts as the timeout.
- :func:`keep_stolen_responses`: for pynetdicom requestors (the scanners of tests/faults.py and
  tests/e2e/test_crash.py), a response that pynetdicom's reactor took goes back to the waiting send.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from node.config import NodeConfig

__all__ = ["TIMEOUT_SLACK", "ScuSettings", "keep_stolen_responses"]

# An attempt that ended this close to its timeout is taken as the timeout (clocks and scheduling jitter).
TIMEOUT_SLACK = 0.9


@dataclass(frozen=True, slots=True)
class ScuSettings:
    """How associations are opened.

    Attributes
    ----------
    calling_ae
        Our AE title (Calling AE Title).
    acse_timeout
        Seconds for the TCP connection and for the association negotiation and release, each.
    dimse_timeout
        Seconds to wait for a C-STORE or C-ECHO response before the association counts as stalled.
    network_timeout
        Seconds a write may wait for the peer to read before the association is dropped.
    max_pdu
        Largest PDU we receive, bytes; 0 = unlimited (pynetdicom's default, 16382, is slow).
    stall_retries
        New associations a batch may open after a stall or a lost association.
    """

    calling_ae: str
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    max_pdu: int = 0
    stall_retries: int = 2

    def __post_init__(self) -> None:
        if min(self.acse_timeout, self.dimse_timeout, self.network_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if self.stall_retries < 0 or self.max_pdu < 0:
            raise ValueError("stall_retries and max_pdu must be 0 or more")

    @classmethod
    def from_config(cls, config: NodeConfig, calling_ae: str | None = None, stall_retries: int = 2) -> ScuSettings:
        """Settings from ``[limits]``; the calling AE is ``node.ae_title`` unless given."""
        limits = config.limits
        return cls(
            calling_ae=calling_ae or config.node.ae_title,
            acse_timeout=limits.acse_timeout_s,
            dimse_timeout=limits.dimse_timeout_s,
            network_timeout=limits.network_timeout_s,
            max_pdu=limits.max_pdu,
            stall_retries=stall_retries,
        )


def keep_stolen_responses(assoc: Any) -> None:
    """Give a response that pynetdicom's reactor thread took back to the thread waiting for it.

    pynetdicom's requestor pauses its reactor before it sends a request (``send_c_store`` clears
    ``_reactor_checkpoint`` and waits for ``_is_paused``), but the reactor sets ``_is_paused`` *before*
    it waits at the checkpoint: if the checkpoint is cleared just after the reactor passed it, the flag
    is stale, the request goes out, and the reactor's next ``get_msg`` can take the response off the
    queue before ``send_c_store`` does. It then logs "Received unexpected C-STORE service message" and
    drops it, and ``send_c_store`` waits for the whole DIMSE timeout. The faster the peer answers (and
    the longer the GIL keeps the reactor waiting), the likelier: a fast node made it the 10 s stalls of
    tests/e2e/test_disk_full.py that got issue 3's DUL pacer reverted, and of tests/e2e/test_crash.py.
    Here a response the reactor would drop goes back on the queue that ``send_c_store`` waits on.
    """
    serve = assoc._serve_request

    def serve_or_give_back(msg: Any, context_id: int) -> None:
        if not msg.is_valid_request and assoc.is_established:
            assoc.dimse.msg_queue.put((context_id, msg))
            return
        serve(msg, context_id)

    assoc._serve_request = serve_or_give_back
