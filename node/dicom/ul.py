"""The DICOM Upper Layer (PS3.8 §9) and DIMSE command sets (PS3.7 §9, §E) on a plain socket.

pynetdicom runs two polling threads per association (its DUL loop and its reactor sleep 1 ms between looks),
which costs a C-STORE about 3 ms of waiting on one association and the GIL on many: measured here, a
pynetdicom SCP that discards what it receives tops out near 290 instances/s. The node's hot paths (the
SCP's C-STORE, the sender's C-STORE) only need the PDUs and the few command elements below, read and
written by blocking calls on the association's own thread; everything with many options (the A-ASSOCIATE
items, presentation context negotiation) stays pynetdicom's (:mod:`pynetdicom.pdu`,
:func:`pynetdicom.presentation.negotiate_as_acceptor`).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import BinaryIO

ASSOCIATE_RQ, ASSOCIATE_AC, ASSOCIATE_RJ, P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = range(1, 8)
PDU_NAMES = {
    ASSOCIATE_RQ: "A-ASSOCIATE-RQ",
    ASSOCIATE_AC: "A-ASSOCIATE-AC",
    ASSOCIATE_RJ: "A-ASSOCIATE-RJ",
    P_DATA_TF: "P-DATA-TF",
    RELEASE_RQ: "A-RELEASE-RQ",
    RELEASE_RP: "A-RELEASE-RP",
    ABORT: "A-ABORT",
}
# An A-ASSOCIATE PDU is a few kB; a bigger one is a stream that is not DICOM (PS3.8 §9.3.2).
MAX_ASSOCIATE_PDU = 1 << 20
# A PDU's body is read in pieces this large, so a length field that lies costs no more memory than the
# bytes that really arrive.
_READ_PIECE = 4 << 20

# DIMSE Command Field values (PS3.7 §E.1)
C_STORE_RQ, C_STORE_RSP, C_ECHO_RQ, C_ECHO_RSP = 0x0001, 0x8001, 0x0030, 0x8030
NO_DATASET = 0x0101

# Command set elements (group 0000), tag as (group << 16) | element
AFFECTED_SOP_CLASS_UID = 0x00000002
COMMAND_FIELD = 0x00000100
MESSAGE_ID = 0x00000110
MESSAGE_ID_BEING_RESPONDED_TO = 0x00000120
MOVE_ORIGINATOR_AE = 0x00001030
MOVE_ORIGINATOR_MESSAGE_ID = 0x00001031
PRIORITY = 0x00000700
COMMAND_DATASET_TYPE = 0x00000800
STATUS = 0x00000900
ERROR_COMMENT = 0x00000902
AFFECTED_SOP_INSTANCE_UID = 0x00001000

RELEASE_RP_PDU = bytes.fromhex("06000000000400000000")
RELEASE_RQ_PDU = bytes.fromhex("05000000000400000000")
_HEADER = struct.Struct(">BxL")
_PDV = struct.Struct(">LBB")
_ELEMENT = struct.Struct("<HHL")


class ProtocolError(Exception):
    """The peer broke PS3.8 or PS3.7: the association is aborted (the message says what it sent)."""


class PeerClosedError(Exception):
    """The connection ended (between PDUs, or part-way through one)."""


def read_pdu(stream: BinaryIO | SocketReader, max_length: int = 0) -> tuple[int, bytes]:
    """The next PDU: ``(type, body)``, the body without its 6-byte header.

    Parameters
    ----------
    stream
        A :class:`SocketReader` or a buffered reader on the socket (``socket.makefile("rb")``); a socket
        timeout propagates.
    max_length
        The largest P-DATA-TF body accepted (the Maximum Length we announced, 0 for any).

    Raises
    ------
    PeerClosedError
        The connection ended; ProtocolError: an unknown PDU type or a length over the limits.
    """
    header = stream.read(6)
    if len(header) < 6:
        raise PeerClosedError("the peer closed the connection" + (" part-way through a PDU header" if header else ""))
    kind, length = _HEADER.unpack(header)
    if kind not in PDU_NAMES:
        raise ProtocolError(f"unknown PDU type 0x{kind:02X}")
    if kind == P_DATA_TF:
        if max_length and length > max_length:
            raise ProtocolError(f"P-DATA-TF of {length} bytes, over the {max_length} we announced")
    elif length > MAX_ASSOCIATE_PDU:
        raise ProtocolError(f"{PDU_NAMES[kind]} of {length} bytes")
    if length <= _READ_PIECE:
        body = stream.read(length)
    else:
        pieces: list[bytes] = []
        left = length
        while left:
            piece = stream.read(min(left, _READ_PIECE))
            if not piece:
                break
            pieces.append(piece)
            left -= len(piece)
        body = b"".join(pieces)
    if len(body) < length:
        raise PeerClosedError(f"the peer closed the connection part-way through a {PDU_NAMES[kind]}")
    return kind, body


def pdvs(body: bytes) -> Iterator[tuple[int, int, memoryview]]:
    """The presentation data values of a P-DATA-TF body: ``(context ID, control header, fragment)``."""
    view = memoryview(body)
    offset, end = 0, len(body)
    while offset < end:
        if end - offset < 6:
            raise ProtocolError("P-DATA-TF ends inside a PDV item header")
        length, context_id, control = _PDV.unpack_from(body, offset)
        if length < 2 or offset + 4 + length > end:
            raise ProtocolError(f"PDV item length {length} does not fit its P-DATA-TF")
        yield context_id, control, view[offset + 6 : offset + 4 + length]
        offset += 4 + length


def p_data(context_id: int, payload: bytes | memoryview, command: bool, max_pdu: int) -> Iterator[bytes]:
    """P-DATA-TF PDUs carrying ``payload`` as one message part, each within the peer's ``max_pdu`` (0: any)."""
    piece = len(payload) if not max_pdu else max(1, max_pdu - 6)
    kind = 0x01 if command else 0x00
    total = len(payload)
    offset = 0
    while True:
        chunk = payload[offset : offset + piece]
        offset += len(chunk)
        last = offset >= total
        control = kind | (0x02 if last else 0x00)
        yield _HEADER.pack(P_DATA_TF, 6 + len(chunk)) + _PDV.pack(2 + len(chunk), context_id, control) + bytes(chunk)
        if last:
            return


def abort_pdu(source: int = 0x02, reason: int = 0x00) -> bytes:
    """A-ABORT (PS3.8 §9.3.8): source 0 = service user, 2 = service provider (then ``reason`` says why)."""
    return _HEADER.pack(ABORT, 4) + bytes((0, 0, source, reason))


def decode_command(data: bytes) -> dict[int, bytes]:
    """A command set (implicit VR little endian, group 0000) as ``{tag: raw value}``."""
    elements: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset < end:
        if end - offset < 8:
            raise ProtocolError("command set ends inside an element header")
        group, element, length = _ELEMENT.unpack_from(data, offset)
        offset += 8
        if group != 0 or offset + length > end:
            raise ProtocolError(f"command set element ({group:04X},{element:04X}) is not a command element")
        elements[element] = bytes(data[offset : offset + length])
        offset += length
    return elements


def us(elements: dict[int, bytes], tag: int) -> int | None:
    """An unsigned short of a decoded command set, ``None`` when absent or malformed."""
    value = elements.get(tag)
    return int.from_bytes(value, "little") if value is not None and len(value) == 2 else None


def text(elements: dict[int, bytes], tag: int) -> str:
    """A UI or AE value of a decoded command set, padding removed."""
    return elements.get(tag, b"").decode("latin-1").strip("\0 ")


def _ui(value: str) -> bytes:
    raw = value.encode("latin-1")
    return raw + b"\0" if len(raw) % 2 else raw


def _lo(value: str) -> bytes:
    raw = value.encode("latin-1", "replace")
    return raw + b" " if len(raw) % 2 else raw


def encode_command(elements: list[tuple[int, bytes]]) -> bytes:
    """A command set from ``(tag, value)`` pairs in tag order, its Command Group Length first."""
    body = b"".join(_ELEMENT.pack(0, tag, len(value)) + value for tag, value in elements)
    return _ELEMENT.pack(0, 0, 4) + len(body).to_bytes(4, "little") + body


def _u16(value: int) -> bytes:
    return value.to_bytes(2, "little")


def store_request(message_id: int, sop_class: str, sop_instance: str, priority: int = 0) -> bytes:
    """A C-STORE-RQ command set (a dataset follows)."""
    return encode_command(
        [
            (AFFECTED_SOP_CLASS_UID, _ui(sop_class)),
            (COMMAND_FIELD, _u16(C_STORE_RQ)),
            (MESSAGE_ID, _u16(message_id)),
            (PRIORITY, _u16(priority)),
            (COMMAND_DATASET_TYPE, _u16(0x0000)),
            (AFFECTED_SOP_INSTANCE_UID, _ui(sop_instance)),
        ]
    )


def store_response(message_id: int, sop_class: str, sop_instance: str, status: int, comment: str = "") -> bytes:
    """A C-STORE-RSP command set; ``comment`` (at most 64 characters) goes in Error Comment when not empty."""
    elements = [
        (AFFECTED_SOP_CLASS_UID, _ui(sop_class)),
        (COMMAND_FIELD, _u16(C_STORE_RSP)),
        (MESSAGE_ID_BEING_RESPONDED_TO, _u16(message_id)),
        (COMMAND_DATASET_TYPE, _u16(NO_DATASET)),
        (STATUS, _u16(status)),
    ]
    if comment:
        elements.append((ERROR_COMMENT, _lo(comment[:64])))
    elements.append((AFFECTED_SOP_INSTANCE_UID, _ui(sop_instance)))
    return encode_command(elements)


def echo_response(message_id: int, sop_class: str, status: int = 0) -> bytes:
    """A C-ECHO-RSP command set."""
    return encode_command(
        [
            (AFFECTED_SOP_CLASS_UID, _ui(sop_class)),
            (COMMAND_FIELD, _u16(C_ECHO_RSP)),
            (MESSAGE_ID_BEING_RESPONDED_TO, _u16(message_id)),
            (COMMAND_DATASET_TYPE, _u16(NO_DATASET)),
            (STATUS, _u16(status)),
        ]
    )


def send_all(sock: socket.socket, pdus: Iterator[bytes] | list[bytes]) -> None:
    """Write PDUs; ``sendall`` on a socket with a timeout raises ``TimeoutError`` when the peer stops reading."""
    for pdu in pdus:
        sock.sendall(pdu)


def echo_request(message_id: int, sop_class: str = "1.2.840.10008.1.1") -> bytes:
    """A C-ECHO-RQ command set (no dataset); Verification SOP Class unless told otherwise."""
    return encode_command(
        [
            (AFFECTED_SOP_CLASS_UID, _ui(sop_class)),
            (COMMAND_FIELD, _u16(C_ECHO_RQ)),
            (MESSAGE_ID, _u16(message_id)),
            (COMMAND_DATASET_TYPE, _u16(NO_DATASET)),
        ]
    )


class SocketReader:
    """``read(n)`` on a socket for :func:`read_pdu`, acknowledging every segment at once (TCP_QUICKACK).

    A sender with Nagle's algorithm on (most scanners: DCMTK and pynetdicom leave it on) holds the last,
    short segment of a C-STORE until its earlier segments are acknowledged, and Linux delays that ACK by
    up to 40 ms: every instance then waits for the timer (measured here: 52 instances/s instead of about
    400). Linux clears TCP_QUICKACK after a while, so it is set again after each ``recv``.
    """

    _CHUNK = 1 << 18

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._pending = b""
        self._quickack = getattr(socket, "TCP_QUICKACK", None)

    def _recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        if self._quickack is not None:
            try:
                self._sock.setsockopt(socket.IPPROTO_TCP, self._quickack, 1)
            except OSError:
                self._quickack = None  # not a TCP socket (a test's socketpair): nothing to acknowledge
        return data

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes, or fewer when the connection ends first; a socket timeout propagates."""
        if len(self._pending) >= size:
            out, self._pending = self._pending[:size], self._pending[size:]
            return out
        parts, have = [self._pending], len(self._pending)
        while have < size:
            chunk = self._recv(max(size - have, self._CHUNK))
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        out, self._pending = data[:size], data[size:]
        return out

    def close(self) -> None:
        self._pending = b""
