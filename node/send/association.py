"""Opening and closing the SCU's associations: settings, the AE, the socket, and why an attempt failed, in words.

- :class:`ScuSettings`: our AE title, timeouts, maximum PDU and stall retries (:meth:`ScuSettings.from_config`
  takes them from ``[limits]``); :func:`make_ae` builds a pynetdicom AE with them.
- :func:`pynetdicom_options`: pynetdicom's process-wide options this package needs, set once
  (``STORE_SEND_CHUNKED_DATASET``: a file given by path is sent as it is stored, never decoded).
- :func:`open_association`: TCP_NODELAY on the socket (pynetdicom never sets it; with Nagle each C-STORE
  waits for a delayed ACK), our maximum PDU from the settings (0 = unlimited), TLS for a destination with
  TLS settings (pynetdicom's ``tls_args``: the context of :func:`node.dicom.tls.client_context` and the
  destination's host as the name its certificate must hold); a failed attempt returns why in words
  (unresolvable host, refused connection, a TLS handshake that failed and why, rejection, no accepted
  context, ACSE timeout), never raises.
- :func:`close_association` releases (or aborts) an association; :func:`no_response` says why a C-STORE
  or C-ECHO got no response (the DIMSE timeout, or the association aborted or lost).
"""

from __future__ import annotations

import functools
import logging
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, _config, evt
from pynetdicom.presentation import PresentationContext

from node.config import NodeConfig
from node.dicom.tls import TLSAttempt
from node.errors import ConfigError
from node.send.destination import Destination

__all__ = ["ScuSettings", "close_association", "make_ae", "no_response", "open_association", "pynetdicom_options"]

log = logging.getLogger(__name__)

# An attempt that ended this close to its timeout is taken as the timeout (clocks and scheduling jitter).
_TIMEOUT_SLACK = 0.9


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
        Seconds of silence on an open association before pynetdicom aborts it.
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


@functools.cache
def pynetdicom_options() -> None:
    """Set pynetdicom's process-wide options the SCU needs, once.

    ``STORE_SEND_CHUNKED_DATASET``: ``send_c_store(path)`` sends the file's bytes after the file meta as
    they are, in PDU-sized chunks, instead of decoding and re-encoding the dataset. It only changes what
    ``send_c_store`` does when given a path; ``send_c_store(dataset)`` and the SCP (which never sends a
    C-STORE, and receives by ``STORE_RECV_CHUNKED_DATASET``) are unaffected.
    """
    _config.STORE_SEND_CHUNKED_DATASET = True


def _on_connect(event: Any, connected: threading.Event) -> None:
    """EVT_CONN_OPEN: TCP_NODELAY on the association's socket (pynetdicom leaves Nagle on)."""
    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    connected.set()


def make_ae(settings: ScuSettings) -> Any:
    """A pynetdicom AE with our AE title and the settings' timeouts (the caller shuts it down)."""
    ae = AE(ae_title=settings.calling_ae)
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.dimse_timeout
    ae.network_timeout = settings.network_timeout
    ae.connection_timeout = settings.acse_timeout
    return ae


@dataclass(frozen=True, slots=True)
class _Opened:
    """An association attempt: the association when established, else why not in words."""

    assoc: Any = None
    why: str = ""
    nothing_accepted: bool = False  # the peer accepted the association but none of its contexts


def open_association(
    ae: Any, destination: Destination, contexts: list[PresentationContext], settings: ScuSettings
) -> _Opened:
    """Open an association; pynetdicom aborts one whose contexts were all refused (``nothing_accepted``)."""
    connected = threading.Event()
    where = f"{destination.host}:{destination.port}"
    tls: TLSAttempt | None = None
    if destination.tls is not None:
        try:
            tls = TLSAttempt(destination.tls, destination.host)
        except ConfigError as exc:  # a certificate or key file changed since the config was loaded
            return _Opened(why=f"peer {destination.name or where}: {exc}")
    started = time.monotonic()
    try:
        assoc = ae.associate(
            destination.host,
            destination.port,
            contexts,
            ae_title=destination.ae_title,
            max_pdu=settings.max_pdu,
            evt_handlers=[(evt.EVT_CONN_OPEN, _on_connect, [connected])],
            tls_args=tls.tls_args if tls is not None else None,
        )
    except OSError as exc:  # socket.gaierror: the host name does not resolve
        return _Opened(why=f"cannot resolve host '{destination.host}' ({exc})")
    if assoc.is_established:
        keep_stolen_responses(assoc)
        return _Opened(assoc)
    elapsed = time.monotonic() - started
    tls_failure = tls.why(where) if tls is not None else None
    if tls_failure is not None:
        return _Opened(why=tls_failure)
    answer = assoc.acceptor.primitive
    if assoc.is_rejected and answer is not None:
        how = f"{answer.result_str.lower()}, by the {answer.source_str.lower()}"
        return _Opened(why=f"association rejected by {destination.ae_title}: {answer.reason_str} ({how})")
    if answer is not None and answer.result == 0 and not assoc.accepted_contexts and assoc.rejected_contexts:
        return _Opened(why=f"{destination} accepted none of the presentation contexts", nothing_accepted=True)
    if not connected.is_set():
        if elapsed >= _TIMEOUT_SLACK * settings.acse_timeout:
            return _Opened(why=f"no answer from {where} within {settings.acse_timeout:g} s (connect timeout)")
        return _Opened(why=f"cannot connect to {where} (connection refused or host unreachable)")
    if elapsed >= _TIMEOUT_SLACK * settings.acse_timeout:
        return _Opened(why=f"no association answer from {where} within {settings.acse_timeout:g} s (ACSE timeout)")
    return _Opened(why=f"the association request to {where} was aborted or the connection closed")


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


def close_association(assoc: Any) -> None:
    """Release an open association (abort it if the release fails); never raises."""
    try:
        if assoc.is_established:
            assoc.release()
        if assoc.is_established:
            assoc.abort()
    except Exception:  # closing is best effort: the association is done either way
        log.debug("closing the association failed", exc_info=True)


def no_response(settings: ScuSettings, elapsed: float) -> str:
    """Why a C-STORE got no response after ``elapsed`` seconds: the DIMSE timeout, or a lost association."""
    if elapsed >= _TIMEOUT_SLACK * settings.dimse_timeout:
        return f"no C-STORE response within {settings.dimse_timeout:g} s (DIMSE timeout)"
    return "the association was aborted or the connection lost while waiting for a C-STORE response"
