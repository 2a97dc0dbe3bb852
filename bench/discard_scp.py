"""pynetdicom's ceiling: an SCP that accepts every storage context as the node does and discards what it gets.

    .venv/bin/python bench/discard_scp.py PORT COUNT_FILE

The settings the node's receiver had while it was built on pynetdicom: every storage SOP class with the
node's accepted transfer syntaxes, unlimited PDU size, TCP_NODELAY on accepted sockets, a listen queue of
128; the C-STORE handler returns Success at once. After every association it writes the number of
instances received so far to COUNT_FILE. It is the row bench/ingest.py calls "pynetdicom discard": how fast
a pynetdicom receiver could be if storing cost nothing (the node now has its own acceptor,
node/receive/acceptor.py, and can pass this ceiling).
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import socket

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from node.dicom.contexts import ACCEPTED_TRANSFER_SYNTAXES


class _NoDelayServer(ThreadedAssociationServer):
    """TCP_NODELAY on every accepted socket (else each C-STORE response waits for an ACK)."""

    request_queue_size = 128

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, address


def main() -> int:
    port, count_file = int(sys.argv[1]), Path(sys.argv[2])
    received = 0
    lock = threading.Lock()

    def store(event: Any) -> int:
        nonlocal received
        event.request.DataSet.getvalue()  # the bytes, as the node's handler takes them
        with lock:
            received += 1
        return 0x0000

    def released(event: Any) -> None:
        with lock:
            count_file.write_text(str(received))

    ae = AE("DISCARD")
    ae.maximum_pdu_size = 0
    ae.network_timeout = 30
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax, list(ACCEPTED_TRANSFER_SYNTAXES))
    ae.add_supported_context(Verification)
    handlers = [(evt.EVT_C_STORE, store), (evt.EVT_C_ECHO, lambda e: 0x0000), (evt.EVT_CONN_CLOSE, released)]
    server = ae.make_server(("127.0.0.1", port), evt_handlers=handlers, server_class=_NoDelayServer)
    ae._servers.append(server)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
