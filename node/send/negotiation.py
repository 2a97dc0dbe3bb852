"""The A-ASSOCIATE items of the SCU's associations, encoded and decoded by pynetdicom's PDU classes.

The items have many options (user information sub-items, role selection, extended negotiation): they stay
pynetdicom's. What the requestor (:mod:`node.send.requestor`) needs from them: the A-ASSOCIATE-RQ it
sends, the contexts an A-ASSOCIATE-AC accepted with the peer's Maximum Length, and why an
A-ASSOCIATE-RJ refused it, in pynetdicom's words.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydicom.uid import UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
)
from pynetdicom.presentation import PresentationContext

from node.dicom import ul
from node.dicom.associate import APPLICATION_CONTEXT, user_information

__all__ = ["APPLICATION_CONTEXT", "AcceptedContext", "accepted_contexts", "associate_rq", "numbered", "rejection"]


@dataclass(frozen=True, slots=True)
class AcceptedContext:
    """A presentation context the peer accepted, with the transfer syntax it chose."""

    context_id: int
    abstract_syntax: UID
    transfer_syntax: UID


def _pdu_bytes(kind: int, body: bytes) -> bytes:
    return bytes((kind, 0)) + len(body).to_bytes(4, "big") + body


def associate_rq(calling: str, called: str, contexts: Sequence[PresentationContext], max_pdu: int) -> bytes:
    """The A-ASSOCIATE-RQ PDU proposing ``contexts`` (their ``context_id`` set) with our Maximum Length."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = APPLICATION_CONTEXT
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    primitive.presentation_context_definition_list = list(contexts)
    primitive.user_information = list(user_information(max_pdu))
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())


def numbered(contexts: Sequence[PresentationContext]) -> list[PresentationContext]:
    """Copies of ``contexts`` with ids 1, 3, 5, ... (the caller's objects are left alone)."""
    numbered = []
    for n, proposed in enumerate(contexts):
        cx = PresentationContext()
        cx.context_id = 2 * n + 1
        cx.abstract_syntax = proposed.abstract_syntax
        cx.transfer_syntax = list(proposed.transfer_syntax)
        numbered.append(cx)
    return numbered


def accepted_contexts(body: bytes, proposed: Sequence[PresentationContext]) -> tuple[list[AcceptedContext], int]:
    """The contexts an A-ASSOCIATE-AC (its body) accepted, and the peer's Maximum Length (0: any).

    A context counts only when its id was proposed and its transfer syntax is one proposed for it.
    pynetdicom's decoder raises assorted exceptions on a malformed PDU: the caller aborts.
    """
    ac = A_ASSOCIATE_AC()
    ac.decode(_pdu_bytes(ul.ASSOCIATE_AC, body))
    answer = ac.to_primitive()
    by_id = {cx.context_id: cx for cx in proposed}
    accepted = []
    for cx in answer.presentation_context_definition_results_list:
        asked = by_id.get(cx.context_id)
        if cx.result == 0 and asked is not None and asked.abstract_syntax and cx.transfer_syntax:
            chosen = UID(cx.transfer_syntax[0])
            if chosen in asked.transfer_syntax:
                accepted.append(AcceptedContext(int(cx.context_id or 0), UID(asked.abstract_syntax), chosen))
    return accepted, int(answer.maximum_length_received or 0)


def rejection(body: bytes) -> str:
    """Why an A-ASSOCIATE-RJ (its body) refused: ``"<reason> (<result>, by the <source>)"``."""
    try:
        rj = A_ASSOCIATE_RJ()
        rj.decode(_pdu_bytes(ul.ASSOCIATE_RJ, body))
        answer = rj.to_primitive()
        return f"{answer.reason_str} ({answer.result_str.lower()}, by the {answer.source_str.lower()})"
    except Exception:  # a reason pynetdicom cannot name
        return "an A-ASSOCIATE-RJ that does not decode"
