"""The node's AE and listener: storage and verification SCP, policy, limits, TCP_NODELAY."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

from pynetdicom import AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from node.config import NodeConfig
from node.dicom.contexts import ACCEPTED_TRANSFER_SYNTAXES
from node.receive.handlers import StoreHandler
from node.receive.policy import Policy, PolicyAE

log = logging.getLogger(__name__)


class _NoDelayServer(ThreadedAssociationServer):
    """Sets TCP_NODELAY on every accepted socket: with Nagle on, each C-STORE response waits for an ACK."""

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address


class Receiver:
    """The SCP: listens on ``node.bind:node.port`` until :meth:`stop`.

    Parameters
    ----------
    config
        Node, limits and peers.
    handler
        The C-ECHO / C-STORE handlers and association bookkeeping.
    """

    def __init__(self, config: NodeConfig, handler: StoreHandler) -> None:
        self.config = config
        self.handler = handler
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
        handlers: list[Any] = [*self.handler.bindings(), (evt.EVT_REJECTED, self._rejected)]
        server = self.ae.make_server((node.bind, node.port), evt_handlers=handlers, server_class=_NoDelayServer)
        self.ae._servers.append(server)  # pynetdicom's own start_server does this: shutdown() expects it
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="dicom-listener", daemon=True)
        self._thread.start()
        log.info("listening as %s on %s:%d", node.ae_title, node.bind, self.port)

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
        else:
            reason = f"{self.config.limits.max_associations} associations already open (limits.max_associations)"
        self.policy.log_rejection(calling, called, address, reason)

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
