"""The node's AE and listener: storage and verification SCP, policy, limits, TCP_NODELAY, TLS.

With ``[node.tls]`` the listener speaks TLS only (PS3.15 Annex B; :mod:`node.dicom.tls` builds the
context): there is no second, plain port. pynetdicom would do each TLS handshake on the listener's own
thread, right after ``accept``, with no timeout, so one silent client would block every other one; here
the accepted socket is wrapped without a handshake, and the handshake runs on the connection's own thread
within ``limits.acse_timeout_s``. A connection whose handshake fails (no or an untrusted client
certificate under mutual TLS, an old TLS version, a plain DICOM client) is closed before any association
exists, and logged as a WARNING once per client address and reason (repeats at DEBUG).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from typing import Any

from pynetdicom import AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from node.audit import AuditTrail
from node.config import NodeConfig
from node.config.tls import ListenerTLS
from node.dicom.contexts import ACCEPTED_TRANSFER_SYNTAXES
from node.dicom.tls import explain, server_context
from node.metrics import metrics, rejection_reason
from node.receive.handlers import StoreHandler
from node.receive.policy import Policy, PolicyAE

log = logging.getLogger(__name__)


class _HandshakeLog:
    """Logs a refused TLS handshake once per (client address, reason) as a WARNING, repeats at DEBUG."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logged: set[tuple[str, str]] = set()

    def refused(self, address: str, reason: str) -> None:
        with self._lock:
            first = (address, reason) not in self._logged
            self._logged.add((address, reason))
        log.log(logging.WARNING if first else logging.DEBUG, "TLS connection from %s refused: %s", address, reason)


class _NoDelayServer(ThreadedAssociationServer):
    """Sets TCP_NODELAY on every accepted socket (with Nagle on, each C-STORE response waits for an ACK);
    with TLS, wraps it and shakes hands on the connection's thread (see the module's docstring)."""

    # socketserver's default backlog of 5 overflows under a burst of connections, and an overflowed
    # connection (a good peer's too) waits for TCP retransmissions, seconds each.
    request_queue_size = 128

    def __init__(self, *args: Any, handshake_timeout: float = 30.0, min_version: str = "1.2", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.handshake_timeout = handshake_timeout
        self.min_version = min_version
        self.refusals = _HandshakeLog()
        self._handshaking: set[ssl.SSLSocket] = set()
        self._handshaking_lock = threading.Lock()
        self._closing = False

    def get_request(self) -> tuple[socket.socket, Any]:
        if self.socket is None:  # closed by shutdown(); socketserver ignores an OSError here
            raise OSError("the listening socket is closed")
        sock, address = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # the wrapped socket shares the descriptor
        # accept() does not pass the listening socket's timeout on: without this, a peer that stops half-way
        # through a PDU holds an association thread (and a slot of the association limit) forever.
        sock.settimeout(self.ae.network_timeout)
        if self.ssl_context is not None:
            try:
                sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except OSError:
                sock.close()
                raise
        return sock, address

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket) and not self._handshake(request, str(client_address[0])):
            self.shutdown_request(request)
            return
        super().finish_request(request, client_address)

    def _handshake(self, sock: ssl.SSLSocket, address: str) -> bool:
        """The TLS handshake within the timeout; ``False`` (and the reason logged) when it failed."""
        previous = sock.gettimeout()
        sock.settimeout(self.handshake_timeout)
        with self._handshaking_lock:
            self._handshaking.add(sock)
        try:
            sock.do_handshake()
        except OSError as exc:  # ssl.SSLError, a timeout, a reset
            if not self._closing:
                why = explain(exc, "server", min_version=self.min_version, timeout=self.handshake_timeout)
                self.refusals.refused(address, why)
            return False
        finally:
            with self._handshaking_lock:
                self._handshaking.discard(sock)
        sock.settimeout(previous)
        return True

    def server_close(self) -> None:
        """Close the listener; end handshakes in progress (socketserver waits for their threads)."""
        self._closing = True
        with self._handshaking_lock:
            pending = list(self._handshaking)
        for sock in pending:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # do_handshake returns at once with an error
        super().server_close()


def _tls_words(tls: ListenerTLS | None) -> str:
    """`` (TLS 1.2 or newer only; client certificates required)`` for the listening log line."""
    if tls is None:
        return ""
    clients = "not asked for"
    if tls.require_client_certificate:
        clients = "required"
    elif tls.ca_certificates is not None:
        clients = "verified when sent"
    return f" (TLS {tls.min_version} or newer only; client certificates {clients})"


class Receiver:
    """The SCP: listens on ``node.bind:node.port`` until :meth:`stop`.

    Parameters
    ----------
    config
        Node, limits and peers.
    handler
        The C-ECHO / C-STORE handlers and association bookkeeping.
    """

    def __init__(self, config: NodeConfig, handler: StoreHandler, audit: AuditTrail | None = None) -> None:
        self.config = config
        self.handler = handler
        self.audit = audit
        self.policy = Policy(config.peers)
        limits = config.limits
        ae = PolicyAE(config.node.ae_title, self.policy)
        ae.require_called_aet = True
        ae.maximum_associations = limits.max_associations
        ae.acse_timeout = limits.acse_timeout_s
        ae.dimse_timeout = limits.dimse_timeout_s
        ae.network_timeout = limits.network_timeout_s
        ae.maximum_pdu_size = limits.max_pdu
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, list(ACCEPTED_TRANSFER_SYNTAXES))
        ae.add_supported_context(Verification)
        self.ae = ae
        self.ssl_context = server_context(config.node.tls) if config.node.tls is not None else None
        self._server: ThreadedAssociationServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (the configured one, or the one the OS chose for port 0)."""
        if self._server is None:
            return self.config.node.port
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and listen; raises ``OSError`` if the address is taken or not allowed."""
        node = self.config.node
        handlers: list[Any] = [
            *self.handler.bindings(),
            (evt.EVT_REJECTED, self._rejected),
            (evt.EVT_ACCEPTED, self._accepted),
        ]
        server = self.ae.make_server(
            (node.bind, node.port),
            ssl_context=self.ssl_context,
            evt_handlers=handlers,
            server_class=_NoDelayServer,
            handshake_timeout=self.config.limits.acse_timeout_s,
            min_version=node.tls.min_version if node.tls is not None else "1.2",
        )
        self.ae._servers.append(server)  # pynetdicom's own start_server does this: shutdown() expects it
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="dicom-listener", daemon=True)
        self._thread.start()
        log.info("listening as %s on %s:%d%s", node.ae_title, node.bind, self.port, _tls_words(node.tls))

    def _rejected(self, event: evt.Event) -> None:
        """Log why an association was rejected (the reason pynetdicom's checks found, in words)."""
        requestor = event.assoc.requestor
        calling = requestor.ae_title.strip()
        address = str(requestor.address)
        called = str(getattr(requestor.primitive, "called_ae_title", "") or "").strip()
        ours = self.config.node.ae_title
        if not self.policy.permits(calling, address):
            reason = self.policy.explain(calling, address)
        elif called != ours:
            reason = f"called AE title '{called}' is not ours ('{ours}')"
        elif (own := self.policy.peer_limit(calling)) is not None and self._open_from(calling) >= own:
            reason = f"'{calling}' already has {own} associations open (its peer's max_associations)"
        else:
            reason = f"{self.config.limits.max_associations} associations already open (limits.max_associations)"
        self.policy.log_rejection(calling, called, address, reason)
        metrics().associations_rejected.labels(rejection_reason(reason)).inc()
        self._audit(
            "association-rejected",
            "minor failure",
            calling_ae=calling,
            called_ae=called,
            address=address,
            reason=reason,
        )

    def _accepted(self, event: evt.Event) -> None:
        metrics().associations_accepted.inc()
        requestor = event.assoc.requestor
        self._audit(
            "association-accepted",
            calling_ae=requestor.ae_title.strip(),
            address=str(requestor.address),
            called_ae=self.config.node.ae_title,
            tls=self.config.node.tls is not None,
        )

    def _open_from(self, calling: str) -> int:
        return sum(
            1
            for a in self.ae.active_associations
            if a.is_acceptor and a.is_established and a.requestor.ae_title.strip() == calling
        )

    def _audit(self, event: str, outcome: str = "success", **fields: object) -> None:
        if self.audit is None:
            return
        try:
            self.audit.record(event, outcome, **fields)
        except OSError as exc:  # the association goes on; a lost audit record is reported
            log.error("cannot write the audit trail %s: %s", self.audit.path, exc)

    def active_associations(self) -> int:
        """Established associations of peers (a connection still negotiating, or a port probe, is not one)."""
        return len([a for a in self.ae.active_associations if a.is_acceptor and a.is_established])

    def stop_listening(self) -> None:
        """Close the listening socket; associations already open go on."""
        if self._server is not None:
            self._server.shutdown()  # stops serve_forever and closes the socket, aborts nothing
            self._server = None
            log.info("no longer accepting associations")

    def drain(self, deadline_s: float) -> int:
        """Wait up to ``deadline_s`` for open associations to end, then abort the rest; return how many."""
        end = time.monotonic() + deadline_s
        while self.active_associations() and time.monotonic() < end:
            time.sleep(0.1)
        acceptors = [a for a in self.ae.active_associations if a.is_acceptor]
        remaining = sum(1 for a in acceptors if a.is_established)
        for assoc in acceptors:  # established ones past the deadline, and connections that never negotiated
            assoc.abort()
        if remaining:
            log.warning("aborted %d associations still open after the %.0f s drain", remaining, deadline_s)
        return remaining

    def stop(self, deadline_s: float = 0.0) -> None:
        self.stop_listening()
        self.drain(deadline_s)
        self.ae.shutdown()
