"""The SCU's association on a plain (or TLS) socket: negotiation, C-STORE, C-ECHO, release and abort.

pynetdicom's requestor runs a DUL thread and a reactor that poll (they sleep between looks): about 3 ms of
waiting per C-STORE, and the GIL, on a 2-core box. Here everything happens on the caller's thread with
blocking socket calls (:mod:`node.dicom.ul` for the PDUs and command sets); only the A-ASSOCIATE items,
which have many options, are encoded and decoded by pynetdicom's PDU classes.

- :func:`request_association` connects (TCP_NODELAY; TLS as :class:`node.dicom.tls.TLSAttempt` sets it
  up: the peer's certificate verified against its ``tls`` settings, the destination's host as the name
  it must hold), sends the A-ASSOCIATE-RQ (our maximum PDU, pynetdicom's implementation UID and version,
  one presentation context per proposed one, ids 1, 3, 5, ...) and reads the answer, all within the ACSE
  timeout. A failure is returned in words (the same words the pynetdicom-based SCU used), never raised.
- :meth:`Requestor.store` sends a C-STORE of already-encoded dataset bytes and waits for its response
  within the DIMSE timeout; writes wait at most the network timeout. The dataset is split into P-DATA-TF
  PDUs within the peer's Maximum Length (never over :data:`PDU_CAP`), written with ``sendmsg`` from
  slices of the caller's buffer (no copy) on a plain socket.
- No response in time, a response to another message, an A-ABORT, anything else that breaks PS3.7/PS3.8,
  or a closed connection: the association is aborted (or just closed) and :class:`Response` says why, as
  a stall or a lost association; the caller resends on a new association.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pynetdicom.presentation import PresentationContext

from node.dicom import ul
from node.dicom.tls import TLSAttempt
from node.errors import ConfigError
from node.send.association import TIMEOUT_SLACK, ScuSettings
from node.send.destination import Destination
from node.send.negotiation import AcceptedContext, accepted_contexts, associate_rq, numbered, rejection

__all__ = ["PDU_CAP", "Opened", "Requestor", "Response", "request_association"]

log = logging.getLogger(__name__)

# Largest P-DATA-TF we write, even to a peer that takes any size: big enough that the headers cost nothing,
# small enough that a peer reading whole PDUs into memory is not asked for hundreds of MB at once.
PDU_CAP = 1 << 20
_IOV_BATCH = 64  # buffers per sendmsg call, well under IOV_MAX (1024 on Linux)
_HEADER = struct.Struct(">BxL")
_PDV = struct.Struct(">LBB")
_LISTEN_FIRST_S = 0.2  # how long a second TLS try waits for an alert before it writes
_ABORT_WAIT_S = 1.0  # how long writing an A-ABORT may take: the connection is dropped either way


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to a request: ``status`` (``None`` when none came, then ``why`` says why) and Error Comment."""

    status: int | None
    comment: str = ""
    why: str = ""
    timed_out: bool = False  # no answer within the DIMSE timeout (a stall), rather than a lost association


@dataclass(frozen=True, slots=True)
class Opened:
    """An association attempt: the requestor when established, else why not in words."""

    requestor: Requestor | None = None
    why: str = ""
    nothing_accepted: bool = False  # the peer accepted the association but none of its contexts


def _connect(
    destination: Destination, settings: ScuSettings, tls: TLSAttempt | None, listen_first: bool
) -> socket.socket:
    """A connected socket (TLS handshake done); IPv4 addresses first, as pynetdicom connects."""
    infos = socket.getaddrinfo(destination.host, destination.port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = sorted(infos, key=lambda info: info[0] != socket.AF_INET)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else each PDU may wait for a delayed ACK
        sock.settimeout(settings.acse_timeout)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_side=False, server_hostname=tls.host)
        sock.connect(address)
        if listen_first:
            with contextlib.suppress(TimeoutError):
                sock.settimeout(_LISTEN_FIRST_S)
                sock.recv(1)  # an alert raises here (and is recorded); a session ticket is read quietly
    except BaseException:
        sock.close()
        raise
    return sock


def request_association(
    destination: Destination, contexts: Sequence[PresentationContext], settings: ScuSettings
) -> Opened:
    """Open an association proposing ``contexts``; one whose contexts were all refused is aborted
    (``nothing_accepted``). Never raises for the network."""
    proposed = numbered(contexts)
    opened, cut = _attempt(destination, proposed, settings, listen_first=False)
    if cut and destination.tls is not None:
        # TLS 1.3: a server refusing our certificate says so after our side of the handshake is done. When its
        # alert and its close cross our A-ASSOCIATE-RQ, the reset can discard the alert before we read it; a
        # second try that listens for a moment before writing can say why.
        opened, _ = _attempt(destination, proposed, settings, listen_first=True)
    return opened


def _attempt(
    destination: Destination, proposed: list[PresentationContext], settings: ScuSettings, listen_first: bool
) -> tuple[Opened, bool]:
    """One try: the outcome, and whether a TLS connection was cut right after its handshake."""
    where = f"{destination.host}:{destination.port}"
    tls: TLSAttempt | None = None
    if destination.tls is not None:
        try:
            tls = TLSAttempt(destination.tls, destination.host)
        except ConfigError as exc:  # a certificate or key file changed since the config was loaded
            return Opened(why=f"peer {destination.name or where}: {exc}"), False
    started = time.monotonic()
    try:
        sock = _connect(destination, settings, tls, listen_first)
        sock.settimeout(settings.acse_timeout)
    except socket.gaierror as exc:
        return Opened(why=f"cannot resolve host '{destination.host}' ({exc})"), False
    except OSError:
        tls_failure = tls.why(where) if tls is not None else None
        if tls_failure is not None:
            return Opened(why=tls_failure), False
        if time.monotonic() - started >= TIMEOUT_SLACK * settings.acse_timeout:
            return Opened(why=f"no answer from {where} within {settings.acse_timeout:g} s (connect timeout)"), False
        return Opened(why=f"cannot connect to {where} (connection refused or host unreachable)"), False
    reader = sock.makefile("rb")
    try:
        sock.sendall(associate_rq(settings.calling_ae, destination.ae_title, proposed, settings.max_pdu))
        sock.settimeout(max(0.001, started + settings.acse_timeout - time.monotonic()))
        kind, body = ul.read_pdu(reader, 0)
    except (OSError, ul.ProtocolError, ul.PeerClosedError) as exc:
        reader.close()
        sock.close()
        cut = isinstance(exc, ssl.SSLEOFError | ConnectionResetError | BrokenPipeError | ul.PeerClosedError)
        if tls is not None and isinstance(exc, ssl.SSLError):  # TLS 1.3: a refused client certificate shows here
            tls.failed(exc, in_handshake=False)
        tls_failure = tls.why(where) if tls is not None else None
        if tls_failure is not None:
            return Opened(why=tls_failure), cut
        if isinstance(exc, TimeoutError):
            why = f"no association answer from {where} within {settings.acse_timeout:g} s (ACSE timeout)"
            return Opened(why=why), False
        return Opened(why=f"the association request to {where} was aborted or the connection closed"), cut
    requestor = Requestor(sock, reader, settings, where)
    if kind == ul.ASSOCIATE_RJ:
        requestor.close()
        return Opened(why=f"association rejected by {destination.ae_title}: {rejection(body)}"), False
    if kind != ul.ASSOCIATE_AC:
        requestor.abort()
        return Opened(why=f"the association request to {where} was aborted or the connection closed"), False
    try:
        requestor.accepted, requestor.peer_max_pdu = accepted_contexts(body, proposed)
    except Exception as exc:  # pynetdicom raises assorted errors on a malformed PDU
        requestor.abort()
        log.debug("A-ASSOCIATE-AC from %s does not decode: %s", where, exc)
        return Opened(why=f"the association request to {where} got an A-ASSOCIATE-AC that does not decode"), False
    if not requestor.accepted:
        requestor.abort()
        return Opened(why=f"{destination} accepted none of the presentation contexts", nothing_accepted=True), False
    return Opened(requestor), False


class Requestor:
    """An established association on its socket; used by one thread at a time.

    Attributes
    ----------
    accepted
        The contexts the peer accepted.
    peer_max_pdu
        The peer's Maximum Length (0: any); what we write is split to fit it.
    is_open
        False once released, aborted or lost.
    """

    def __init__(self, sock: socket.socket, reader: object, settings: ScuSettings, where: str) -> None:
        self.sock = sock
        self._reader = reader
        self.settings = settings
        self.where = where
        self.accepted: list[AcceptedContext] = []
        self.peer_max_pdu = 0
        self.is_open = True

    def context_for(self, sop_class: str, transfer_syntax: str) -> int | None:
        """The id of the accepted context for ``sop_class`` in ``transfer_syntax``, if any."""
        for cx in self.accepted:
            if cx.abstract_syntax == sop_class and cx.transfer_syntax == transfer_syntax:
                return cx.context_id
        return None

    def store(
        self, context_id: int, message_id: int, sop_class: str, sop_instance: str, dataset: bytes | memoryview
    ) -> Response:
        """C-STORE ``dataset`` (encoded in the context's transfer syntax) and wait for its response."""
        command = ul.store_request(message_id, sop_class, sop_instance)
        parts = self._pdus(context_id, command, True) + self._pdus(context_id, dataset, False)
        return self._request(parts, message_id, ul.C_STORE_RSP, "C-STORE")

    def echo(self, message_id: int = 1) -> Response:
        """C-ECHO on the Verification context and wait for its response."""
        context_id = next((cx.context_id for cx in self.accepted if cx.abstract_syntax == "1.2.840.10008.1.1"), None)
        if context_id is None:
            return Response(None, why="the peer does not accept Verification (C-ECHO)")
        parts = self._pdus(context_id, ul.echo_request(message_id), True)
        return self._request(parts, message_id, ul.C_ECHO_RSP, "C-ECHO")

    def release(self) -> bool:
        """A-RELEASE-RQ, then wait for the A-RELEASE-RP within the ACSE timeout (abort if none); never raises."""
        if not self.is_open:
            return False
        deadline = time.monotonic() + self.settings.acse_timeout
        try:
            self.sock.settimeout(self.settings.network_timeout)
            self.sock.sendall(ul.RELEASE_RQ_PDU)
            while True:
                self.sock.settimeout(max(0.001, deadline - time.monotonic()))
                kind, _ = ul.read_pdu(self._reader, self.settings.max_pdu)  # type: ignore[arg-type]
                if kind == ul.RELEASE_RP:
                    self.close()
                    return True
                if kind == ul.ABORT:
                    break
                if kind == ul.RELEASE_RQ:  # a release collision (PS3.8 §7.2.2): the requestor answers last
                    self.sock.sendall(ul.RELEASE_RP_PDU)
                # a P-DATA-TF here is a late response to a request given up on: skipped
        except (OSError, ul.ProtocolError, ul.PeerClosedError) as exc:
            log.debug("release of the association with %s failed: %s", self.where, exc)
            self.abort()
            return False
        self.close()
        return False

    def usable(self) -> bool:
        """Whether an idle association can carry another request: open, and nothing arrived since the last
        answer. Never blocks for long, never raises.

        A peer may end an idle association (its own idle timeout): an A-RELEASE-RQ is answered with an
        A-RELEASE-RP, an A-ABORT or a closed connection just closes it, anything else is aborted. Catching
        this here means the next batch opens a new association instead of losing its first C-STORE.
        """
        if not self.is_open:
            return False
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            self.close()
            return False
        if not readable and not (isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()):
            return True
        try:
            self.sock.settimeout(_ABORT_WAIT_S)
            kind, _ = ul.read_pdu(self._reader, self.settings.max_pdu)  # type: ignore[arg-type]
            if kind == ul.RELEASE_RQ:
                self.sock.sendall(ul.RELEASE_RP_PDU)
                log.debug("the idle association with %s was released by the peer", self.where)
                self.close()
                return False
        except (OSError, ul.ProtocolError, ul.PeerClosedError):
            self.close()
            return False
        if kind == ul.ABORT:
            self.close()
        else:
            log.debug("the idle association with %s got an unexpected %s", self.where, ul.PDU_NAMES.get(kind, kind))
            self.abort()
        return False

    def abort(self) -> None:
        """A-ABORT (from the service user), then close; never raises."""
        if self.is_open:
            with contextlib.suppress(OSError):
                self.sock.settimeout(_ABORT_WAIT_S)
                self.sock.sendall(ul.abort_pdu(0x00))
        self.close()

    def close(self) -> None:
        """Close the connection without a word to the peer."""
        self.is_open = False
        with contextlib.suppress(OSError):
            self._reader.close()  # type: ignore[attr-defined]
        with contextlib.suppress(OSError):
            self.sock.close()

    def _pdus(self, context_id: int, payload: bytes | memoryview, command: bool) -> list[bytes | memoryview]:
        """P-DATA-TF PDUs carrying ``payload`` as one message part: header, slice, header, slice, ..."""
        view = memoryview(payload).cast("B")
        piece = min(self.peer_max_pdu - 6, PDU_CAP) if self.peer_max_pdu > 6 else PDU_CAP
        kind = 0x01 if command else 0x00
        total = len(view)
        parts: list[bytes | memoryview] = []
        offset = 0
        while True:
            chunk = view[offset : offset + piece]
            offset += len(chunk)
            control = kind | (0x02 if offset >= total else 0x00)
            parts.append(_HEADER.pack(ul.P_DATA_TF, 6 + len(chunk)) + _PDV.pack(2 + len(chunk), context_id, control))
            parts.append(chunk)
            if offset >= total:
                return parts

    def _write(self, parts: list[bytes | memoryview]) -> None:
        """Write ``parts`` in order: gathered by ``sendmsg`` on a plain socket, per PDU over TLS (no sendmsg)."""
        self.sock.settimeout(self.settings.network_timeout)  # a peer that stops reading: TimeoutError
        if isinstance(self.sock, ssl.SSLSocket):
            for n in range(0, len(parts), 2):
                self.sock.sendall(bytes(parts[n]) + parts[n + 1])
            return
        views = [memoryview(part) for part in parts]
        i = 0
        while i < len(views):
            sent = self.sock.sendmsg(views[i : i + _IOV_BATCH])
            while i < len(views) and sent >= len(views[i]):
                sent -= len(views[i])
                i += 1
            if sent:
                views[i] = views[i][sent:]

    def _request(self, parts: list[bytes | memoryview], message_id: int, field: int, name: str) -> Response:
        lost = f"the association was aborted or the connection lost while waiting for a {name} response"
        if not self.is_open:
            return Response(None, why=lost)
        try:
            self._write(parts)
        except OSError as exc:
            self.abort()
            return Response(None, why=f"the connection was lost while sending a {name} ({exc})")
        deadline = time.monotonic() + self.settings.dimse_timeout
        command: list[bytes] = []
        try:
            while True:
                self.sock.settimeout(max(0.001, deadline - time.monotonic()))
                kind, body = ul.read_pdu(self._reader, self.settings.max_pdu)  # type: ignore[arg-type]
                if kind == ul.ABORT:
                    self.close()
                    return Response(None, why=lost)
                if kind != ul.P_DATA_TF:
                    raise ul.ProtocolError(f"{ul.PDU_NAMES[kind]} while waiting for a {name} response")
                for _, control, fragment in ul.pdvs(body):
                    if not control & 0x01:
                        continue  # a dataset fragment: no response we wait for has one
                    command.append(bytes(fragment))
                    if control & 0x02:
                        return self._answer(b"".join(command), message_id, field, name)
        except TimeoutError:
            self.abort()  # as pynetdicom did: a request without an answer ends the association
            why = f"no {name} response within {self.settings.dimse_timeout:g} s (DIMSE timeout)"
            return Response(None, why=why, timed_out=True)
        except ul.ProtocolError as exc:
            log.debug("association with %s aborted: %s", self.where, exc)
            self.abort()
            return Response(None, why=f"{lost} ({exc})")
        except (OSError, ul.PeerClosedError):
            self.close()
            return Response(None, why=lost)

    def _answer(self, data: bytes, message_id: int, field: int, name: str) -> Response:
        elements = ul.decode_command(data)
        got, responded = ul.us(elements, ul.COMMAND_FIELD), ul.us(elements, ul.MESSAGE_ID_BEING_RESPONDED_TO)
        if got != field or responded != message_id:
            raise ul.ProtocolError(f"command 0x{got or 0:04X} to message {responded}, not a {name}-RSP to {message_id}")
        status = ul.us(elements, ul.STATUS)
        if status is None:
            raise ul.ProtocolError(f"a {name}-RSP without a Status")
        return Response(status, ul.text(elements, ul.ERROR_COMMENT))
