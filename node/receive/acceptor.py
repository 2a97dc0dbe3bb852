"""One accepted connection, from A-ASSOCIATE-RQ to release or abort, on its own thread (PS3.8 acceptor).

Reads with blocking calls, so nothing polls: a C-STORE costs the reading of its PDUs, the handler and one
``sendall``. What it answers, and when:

- first PDU not an A-ASSOCIATE-RQ, or one that does not decode, or none within ``acse_timeout_s``: A-ABORT
  (or just close, for bytes that are no PDU);
- an association the policy refuses (:meth:`Admission.admit`): A-ASSOCIATE-RJ with pynetdicom's reasons
  (calling AE, called AE, limits: PS3.8 §9.3.4), logged and audited by the receiver;
- no presentation context accepted: A-ASSOCIATE-AC with every context rejected, then A-ABORT;
- C-ECHO-RQ and C-STORE-RQ (a dataset follows): the handler's status; anything that breaks PS3.7 / PS3.8
  after the association (a fragment out of order, a context never accepted, a command that is not one,
  an unknown command field): A-ABORT, nothing stored;
- A-RELEASE-RQ: A-RELEASE-RP; A-ABORT: close; nothing for ``network_timeout_s``: A-ABORT.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor

from node import logs
from node.dicom import ul
from node.dicom.associate import APPLICATION_CONTEXT, user_information
from node.dicom.status import Status
from node.receive.handlers import Caller, StoreHandler, StoreRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Settings:
    """What every association of one listener shares."""

    ae_title: str
    contexts: list[PresentationContext]
    max_pdu: int
    acse_timeout: float
    network_timeout: float


class RefusedError(Exception):
    """The association is refused: ``(result, source, diagnostic)`` of the A-ASSOCIATE-RJ."""

    def __init__(self, result: int, source: int, diagnostic: int) -> None:
        super().__init__(result, source, diagnostic)
        self.codes = (result, source, diagnostic)


class Admission:
    """What the listener decides for a requested association (implemented by the receiver)."""

    def admit(self, caller: Caller) -> None:
        """Count the association in, or raise :class:`RefusedError` (logged and audited by the implementation)."""
        raise NotImplementedError

    def accepted(self, caller: Caller) -> None:
        """The A-ASSOCIATE-AC was sent."""

    def release(self, caller: Caller) -> None:
        """An admitted association ended."""
        raise NotImplementedError


def _request(body: bytes) -> A_ASSOCIATE:
    pdu = A_ASSOCIATE_RQ()
    pdu.decode(ul.ASSOCIATE_RQ.to_bytes(1, "big") + b"\0" + len(body).to_bytes(4, "big") + body)
    return pdu.to_primitive()


def _roles(request: A_ASSOCIATE) -> dict[Any, tuple[bool | None, bool | None]]:
    items = request.user_information
    return {i.sop_class_uid: (i.scu_role, i.scp_role) for i in items if isinstance(i, SCP_SCU_RoleSelectionNegotiation)}


def _accept_pdu(request: A_ASSOCIATE, results: list[PresentationContext], roles: list[Any], max_pdu: int) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT
    primitive.calling_ae_title = request.calling_ae_title
    primitive.called_ae_title = request.called_ae_title
    primitive.result = 0x00
    primitive.result_source = 0x01
    primitive.presentation_context_definition_results_list = results
    primitive.user_information = [*user_information(max_pdu), *roles]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def reject_pdu(result: int, source: int, diagnostic: int) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.result, primitive.result_source, primitive.diagnostic = result, source, diagnostic
    pdu = A_ASSOCIATE_RJ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


class _Message:
    """One DIMSE message being reassembled from its fragments (PS3.7 §E, PS3.8 Annex E)."""

    def __init__(self, context_id: int) -> None:
        self.context_id = context_id
        self.command: list[bytes] = []
        self.elements: dict[int, bytes] | None = None
        self.data: list[memoryview] = []


class Connection:
    """One accepted TCP (or TLS) connection; :meth:`run` serves it to its end on the calling thread."""

    def __init__(
        self,
        sock: socket.socket,
        address: tuple[str, int],
        settings: Settings,
        admission: Admission,
        handler: StoreHandler,
        handshake: Callable[[ssl.SSLSocket, str], bool] | None = None,
    ) -> None:
        self.sock = sock
        self.address = address
        self.settings = settings
        self.admission = admission
        self.handler = handler
        self.handshake = handshake
        self.caller: Caller | None = None
        self.established = False
        self._contexts: dict[int, tuple[str, str]] = {}
        self._peer_max_pdu = 0

    def abort(self) -> None:
        """A-ABORT from another thread (the drain's deadline); the reading thread then ends."""
        if self.established:
            with contextlib.suppress(OSError):
                self.sock.sendall(ul.abort_pdu(0x00))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def run(self) -> None:
        admitted = False
        try:
            tls = isinstance(self.sock, ssl.SSLSocket) and self.handshake is not None
            if tls and not self.handshake(self.sock, self.address[0]):  # type: ignore[misc,arg-type]
                return
            stream = ul.SocketReader(self.sock)
            try:
                admitted = self._negotiate(stream)
                if admitted and self.established:
                    self._serve(stream)
            finally:
                stream.close()
        except (ul.ProtocolError, ValueError, IndexError, KeyError, TypeError, AttributeError) as exc:
            # pynetdicom's PDU decoders raise any of these on malformed items
            log.warning("aborting the association from %s: %s", self.address[0], exc)
            self._send(ul.abort_pdu())
        except TimeoutError:
            self._send(ul.abort_pdu())
            log.info("association from %s timed out: nothing received in time, aborted", self.address[0])
        except (ul.PeerClosedError, OSError):
            pass  # the peer went away; nothing to answer
        finally:
            if self.caller is not None and admitted:
                if self.established:
                    with contextlib.suppress(Exception):
                        self.handler.closed(self.caller)
                self.admission.release(self.caller)
            self.established = False
            with contextlib.suppress(OSError):
                self.sock.close()

    def _send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(data)

    def _negotiate(self, stream: Any) -> bool:
        self.sock.settimeout(self.settings.acse_timeout)
        kind, body = ul.read_pdu(stream, 0)
        if kind != ul.ASSOCIATE_RQ:
            raise ul.ProtocolError(f"{ul.PDU_NAMES[kind]} before an association was negotiated")
        request = _request(body)
        calling = str(request.calling_ae_title).strip()
        called = str(request.called_ae_title).strip()
        self.caller = Caller(f"{id(self):x}", calling, called, self.address[0])
        if not request.presentation_context_definition_list:
            raise ul.ProtocolError("A-ASSOCIATE-RQ proposes no presentation context")
        try:
            self.admission.admit(self.caller)
        except RefusedError as refusal:
            self._send(reject_pdu(*refusal.codes))
            return False
        results, roles = negotiate_as_acceptor(
            request.presentation_context_definition_list, self.settings.contexts, _roles(request)
        )
        self._contexts = {
            int(cx.context_id): (str(cx.abstract_syntax), str(cx.transfer_syntax[0]))
            for cx in results
            if cx.result == 0 and cx.context_id is not None
        }
        self._peer_max_pdu = int(request.maximum_length_received or 0)
        self.sock.sendall(_accept_pdu(request, results, roles, self.settings.max_pdu))
        if not self._contexts:
            self._send(ul.abort_pdu())
            log.warning("association from %s aborted: none of its presentation contexts is supported", calling)
            return True
        self.established = True
        self.admission.accepted(self.caller)
        logs.peer_ae.set(calling)  # this thread is the association's: its log lines name the peer
        self.handler.opened(self.caller)
        return True

    def _serve(self, stream: Any) -> None:
        self.sock.settimeout(self.settings.network_timeout)
        max_pdu = self.settings.max_pdu
        message: _Message | None = None
        while True:
            kind, body = ul.read_pdu(stream, max_pdu)
            if kind == ul.P_DATA_TF:
                if not body:
                    raise ul.ProtocolError("P-DATA-TF without a PDV")
                for context_id, control, fragment in ul.pdvs(body):
                    message = self._fragment(message, context_id, control, fragment)
            elif kind == ul.RELEASE_RQ:
                if message is not None:
                    raise ul.ProtocolError("A-RELEASE-RQ in the middle of a DIMSE message")
                self.sock.sendall(ul.RELEASE_RP_PDU)
                return
            elif kind == ul.ABORT:
                return
            else:
                raise ul.ProtocolError(f"{ul.PDU_NAMES[kind]} during an association")

    def _fragment(
        self, message: _Message | None, context_id: int, control: int, fragment: memoryview
    ) -> _Message | None:
        if context_id not in self._contexts:
            raise ul.ProtocolError(f"PDV on presentation context {context_id}, which was not accepted")
        is_command, last = bool(control & 0x01), bool(control & 0x02)
        if message is None:
            if not is_command:
                raise ul.ProtocolError("a dataset fragment before its command")
            message = _Message(context_id)
        elif message.context_id != context_id:
            raise ul.ProtocolError("fragments of one message on two presentation contexts")
        if is_command:
            if message.elements is not None:
                raise ul.ProtocolError("a command fragment where the dataset was expected")
            message.command.append(bytes(fragment))
            if not last:
                return message
            message.elements = ul.decode_command(b"".join(message.command))
            if ul.us(message.elements, ul.COMMAND_DATASET_TYPE) != ul.NO_DATASET:
                return message  # its dataset follows
            self._dispatch(message, None)
            return None
        if message.elements is None:
            raise ul.ProtocolError("a dataset fragment before its command was complete")
        message.data.append(fragment)
        if not last:
            return message
        self._dispatch(message, b"".join(message.data))
        return None

    def _dispatch(self, message: _Message, dataset: bytes | None) -> None:
        elements = message.elements
        assert elements is not None
        field = ul.us(elements, ul.COMMAND_FIELD)
        message_id = ul.us(elements, ul.MESSAGE_ID)
        sop_class = ul.text(elements, ul.AFFECTED_SOP_CLASS_UID)
        if message_id is None or not sop_class:
            raise ul.ProtocolError("a request without its Message ID or Affected SOP Class UID")
        abstract, syntax = self._contexts[message.context_id]
        if field == ul.C_ECHO_RQ and dataset is None:
            response = ul.echo_response(message_id, sop_class, self.handler.echo())
        elif field == ul.C_STORE_RQ and dataset is not None:
            instance = ul.text(elements, ul.AFFECTED_SOP_INSTANCE_UID)
            if not instance:
                raise ul.ProtocolError("a C-STORE-RQ without its Affected SOP Instance UID")
            request = StoreRequest(message_id, sop_class, instance, abstract, syntax, dataset)
            assert self.caller is not None
            status, comment = self.handler.store(self.caller, request)
            response = ul.store_response(message_id, sop_class, instance, status, comment)
        elif field == ul.C_STORE_RQ:
            raise ul.ProtocolError("a C-STORE-RQ without a dataset")
        else:
            raise ul.ProtocolError(f"command field 0x{field or 0:04X} is not a request this SCP serves")
        ul.send_all(self.sock, list(ul.p_data(message.context_id, response, True, self._peer_max_pdu)))


__all__ = ["Admission", "Connection", "RefusedError", "Settings", "Status", "reject_pdu"]
