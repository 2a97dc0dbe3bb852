"""Sending an HL7 v2 message over MLLP and reading its ACK, with python-hl7's MLLP streams.

One connection per message: open (within the timeout), write the message in an MLLP block
(``<VT> message <FS><CR>``), wait for one block back (within the timeout), close. python-hl7's
:func:`hl7.mllp.open_hl7_connection` frames and parses both ways; it runs on an event loop of its own in
the calling thread (:func:`asyncio.run`), so a notifier thread blocks here and nowhere else.

The ACK (original acknowledgement mode, MSA-1)::

    AA, CA    delivered
    AE, CE    application error: retried (the engine may accept it later); the reason from MSA-3 / ERR
    AR, CR    rejected: parked (another try gets the same answer), with the reason
    no ACK within the timeout, a closed or refused connection, an ACK for another message: retried
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import hl7
from hl7.mllp import InvalidBlockError, open_hl7_connection

from node.notify.outcome import Delivery, Verdict

_REASON_CHARS = 300


def _field(segment: Any, n: int) -> str:
    try:
        return str(segment(n)).strip()
    except (IndexError, KeyError):
        return ""


def interpret_ack(ack: Any, control_id: str) -> Delivery:
    """The verdict an ACK (a parsed :class:`hl7.Message`) gives the message with MSH-10 ``control_id``."""
    try:
        msa = ack.segment("MSA")
    except KeyError:
        return Delivery(Verdict.RETRY, "the answer has no MSA segment (not an ACK)")
    code, acked, text = _field(msa, 1), _field(msa, 2), _field(msa, 3)
    if acked != control_id:
        return Delivery(Verdict.RETRY, f"the ACK names message {acked or '(none)'}, not {control_id}")
    if code in ("AA", "CA"):
        return Delivery(Verdict.DELIVERED)
    try:
        errors = [str(err)[4:] for err in ack.segments("ERR")]
    except KeyError:
        errors = []
    reason = "; ".join(p for p in [text, *errors] if p)[:_REASON_CHARS] or "no reason given"
    if code in ("AE", "CE"):
        return Delivery(Verdict.RETRY, f"the engine answered {code} (application error): {reason}")
    if code in ("AR", "CR"):
        return Delivery(Verdict.PARK, f"the engine answered {code} (rejected): {reason}")
    return Delivery(Verdict.RETRY, f"the ACK has an unknown code {code!r}: {reason}")


async def _exchange(host: str, port: int, message: str, timeout: float) -> Any:
    reader, writer = await asyncio.wait_for(open_hl7_connection(host, port, encoding="utf-8"), timeout)
    try:
        writer.writemessage(message)
        await writer.drain()
        return await asyncio.wait_for(reader.readmessage(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def send_message(host: str, port: int, message: str, control_id: str, timeout: float) -> Delivery:
    """Send ``message`` to ``host:port`` over MLLP and judge its ACK; never raises for network problems.

    ``timeout`` bounds the connection and, separately, the wait for the ACK (seconds).
    """
    where = f"{host}:{port}"
    try:
        ack = asyncio.run(_exchange(host, port, message, timeout))
    except TimeoutError:
        return Delivery(Verdict.RETRY, f"no ACK from {where} within {timeout:g} s")
    except asyncio.IncompleteReadError:
        return Delivery(Verdict.RETRY, f"{where} closed the connection without an ACK")
    except (OSError, ValueError, InvalidBlockError, hl7.HL7Exception) as exc:  # refused, reset; a bad block
        return Delivery(Verdict.RETRY, f"MLLP exchange with {where} failed: {type(exc).__name__}: {exc}")
    return interpret_ack(ack, control_id)
