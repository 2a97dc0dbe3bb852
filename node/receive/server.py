"""The node's listener: storage and verification SCP, admission (policy, limits), TCP_NODELAY, TLS.

A thread accepts connections and gives each its own thread (:class:`node.receive.acceptor.Connection`).
With ``[node.tls]`` the listener speaks TLS only (PS3.15 Annex B; :mod:`node.dicom.tls` builds the
context): there is no second, plain port. The accepted socket is wrapped without a handshake, and the
handshake runs on the connection's own thread within ``limits.acse_timeout_s``, so one silent client
holds up nobody else. A connection whose handshake fails (no or an untrusted client
certificate under mutual TLS, an old TLS version, a plain DICOM client) is closed before any association
exists, and logged as a WARNING once per client address and reason (repeats at DEBUG).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time

from pynetdicom import AllStoragePresentationContexts
from pynetdicom.presentation import PresentationContext, build_context
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.audit import AuditTrail
from node.config import NodeConfig
from node.config.tls import ListenerTLS
from node.dicom.contexts import ACCEPTED_TRANSFER_SYNTAXES
from node.dicom.tls import explain, server_context
from node.metrics import metrics, rejection_reason
from node.receive.acceptor import Admission, Connection, RefusedError, Settings
from node.receive.handlers import Caller, StoreHandler
from node.receive.policy import Policy
from node.receive.slots import LocalSlots, Slots

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


def supported_contexts() -> list[PresentationContext]:
    """Every storage SOP Class with the transfer syntaxes the node stores as received, and Verification."""
    contexts = [
        build_context(cx.abstract_syntax, list(ACCEPTED_TRANSFER_SYNTAXES))
        for cx in AllStoragePresentationContexts
        if cx.abstract_syntax is not None
    ]
    contexts.append(build_context(Verification))
    return contexts


class Receiver(Admission):
    """The SCP: listens on ``node.bind:node.port`` until :meth:`stop`, a thread per connection.

    Parameters
    ----------
    config
        Node, limits and peers.
    handler
        The C-ECHO / C-STORE handlers and association bookkeeping.
    audit
        Where accepted and rejected associations are recorded.
    reuse_port
        Bind with ``SO_REUSEPORT``, so that several receiver processes share the port (the kernel spreads
        connections over them).
    slots
        Where the associations open at once are counted against the limits; by default in this process.
    """

    def __init__(
        self,
        config: NodeConfig,
        handler: StoreHandler,
        audit: AuditTrail | None = None,
        *,
        reuse_port: bool = False,
        slots: Slots | None = None,
    ) -> None:
        self.config = config
        self.handler = handler
        self.audit = audit
        self.reuse_port = reuse_port
        self.policy = Policy(config.peers)
        self.slots = slots if slots is not None else LocalSlots()
        limits = config.limits
        self.settings = Settings(
            ae_title=config.node.ae_title,
            contexts=supported_contexts(),
            max_pdu=limits.max_pdu,
            acse_timeout=limits.acse_timeout_s,
            network_timeout=limits.network_timeout_s,
        )
        self.ssl_context = server_context(config.node.tls) if config.node.tls is not None else None
        self.refusals = _HandshakeLog()
        self._lock = threading.Lock()
        self._connections: dict[Connection, threading.Thread] = {}
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    @property
    def port(self) -> int:
        """The port listened on (the configured one, or the one the OS chose for port 0)."""
        if self._listener is None:
            return self.config.node.port
        return int(self._listener.getsockname()[1])

    def start(self) -> None:
        """Bind and listen; raises ``OSError`` if the address is taken or not allowed."""
        node = self.config.node
        listener = socket.socket(socket.AF_INET6 if ":" in node.bind else socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind((node.bind, node.port))
            # A burst of connections must not overflow the queue: an overflowed connection (a good peer's
            # too) waits for TCP retransmissions, seconds each.
            listener.listen(128)
            listener.settimeout(0.25)  # how soon the accepting thread sees stop_listening
        except OSError:
            listener.close()
            raise
        self._closing = False
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), name="dicom-listener", daemon=True)
        self._thread.start()
        log.info("listening as %s on %s:%d%s", node.ae_title, node.bind, self.port, _tls_words(node.tls))

    def _accept(self, listener: socket.socket) -> None:
        while not self._closing:
            try:
                sock, address = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closing:
                    return
                time.sleep(0.05)  # EMFILE and the like: the connection waits in the queue
                continue
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else each answer waits for an ACK
                # A peer that stops half-way through a PDU must not hold a thread (and a slot) forever.
                sock.settimeout(self.config.limits.network_timeout_s)
                if self.ssl_context is not None:
                    sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except OSError:
                sock.close()
                continue
            connection = Connection(sock, address, self.settings, self, self.handler, self._handshake)
            thread = threading.Thread(target=self._serve, args=(connection,), name="dicom-association", daemon=True)
            with self._lock:
                self._connections[connection] = thread
            thread.start()

    def _serve(self, connection: Connection) -> None:
        try:
            connection.run()
        except Exception:  # the boundary of a connection: log it, never take the listener down
            log.exception("association from %s failed unexpectedly", connection.address[0])
        finally:
            with self._lock:
                self._connections.pop(connection, None)

    def _handshake(self, sock: ssl.SSLSocket, address: str) -> bool:
        """The TLS handshake within the ACSE timeout; ``False`` (and the reason logged) when it failed."""
        previous = sock.gettimeout()
        timeout = self.config.limits.acse_timeout_s
        sock.settimeout(timeout)
        try:
            sock.do_handshake()
        except OSError as exc:  # ssl.SSLError, a timeout, a reset
            if not self._closing:
                tls = self.config.node.tls
                why = explain(exc, "server", min_version=tls.min_version if tls else "1.2", timeout=timeout)
                self.refusals.refused(address, why)
            return False
        sock.settimeout(previous)
        return True

    # -- admission (called by each connection's thread) ---------------------------------------------

    def admit(self, caller: Caller) -> None:
        calling, address, called = caller.calling_ae, caller.address, caller.called_ae
        ours = self.config.node.ae_title
        codes: tuple[int, int, int] | None = None
        reason = ""
        # pynetdicom's precedence for the codes (the last check that fails decides), the first reason in words.
        if not self.policy.permits(calling, address):
            codes, reason = (1, 1, 3), self.policy.explain(calling, address)
        if called != ours:
            codes, reason = (1, 1, 7), reason or f"called AE title '{called}' is not ours ('{ours}')"
        if codes is None:
            full = self.slots.take(
                caller.key, calling, self.policy.peer_limit(calling), self.config.limits.max_associations
            )
            if full:
                codes, reason = (2, 3, 2), full
        if codes is None:
            return
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
        raise RefusedError(*codes)

    def accepted(self, caller: Caller) -> None:
        metrics().associations_accepted.inc()
        self._audit(
            "association-accepted",
            calling_ae=caller.calling_ae,
            address=caller.address,
            called_ae=self.config.node.ae_title,
            tls=self.config.node.tls is not None,
        )

    def release(self, caller: Caller) -> None:
        self.slots.give_back(caller.key)

    def _audit(self, event: str, outcome: str = "success", **fields: object) -> None:
        if self.audit is None:
            return
        try:
            self.audit.record(event, outcome, **fields)
        except OSError as exc:  # the association goes on; a lost audit record is reported
            log.error("cannot write the audit trail %s: %s", self.audit.path, exc)

    # -- state and shutdown -------------------------------------------------------------------------

    def connections(self) -> list[Connection]:
        """Every connection being served, negotiating or established."""
        with self._lock:
            return list(self._connections)

    def active_associations(self) -> int:
        """Established associations of peers (a connection still negotiating, or a port probe, is not one)."""
        return sum(1 for c in self.connections() if c.established)

    def stop_listening(self) -> None:
        """Close the listening socket; associations already open go on."""
        listener, self._listener = self._listener, None
        if listener is None:
            return
        self._closing = True
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        listener.close()
        log.info("no longer accepting associations")

    def drain(self, deadline_s: float) -> int:
        """Wait up to ``deadline_s`` for open associations to end, then abort the rest; return how many."""
        end = time.monotonic() + deadline_s
        while self.active_associations() and time.monotonic() < end:
            time.sleep(0.05)
        remaining = self.active_associations()
        with self._lock:
            pending = dict(self._connections)
        for connection in pending:  # established ones past the deadline, and connections still negotiating
            connection.abort()
        for thread in pending.values():
            thread.join(timeout=5.0)
        if remaining:
            log.warning("aborted %d associations still open after the %.0f s drain", remaining, deadline_s)
        return remaining

    def stop(self, deadline_s: float = 0.0) -> None:
        self.stop_listening()
        self.drain(deadline_s)
