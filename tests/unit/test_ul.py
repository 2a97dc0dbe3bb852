"""node.dicom.ul: the Upper Layer pieces the SCP and the SCU share, on real sockets."""

from __future__ import annotations

import socket
import threading

import pytest

from node.dicom import ul


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    return client, server


@pytest.mark.parametrize("pair", ["tcp", "unix"])
def test_socket_reader_returns_exact_sizes_across_segments_and_short_at_the_end(pair: str) -> None:
    a, b = _tcp_pair() if pair == "tcp" else socket.socketpair()
    payload = bytes(range(256)) * 4096  # 1 MiB, more than one recv
    sender = threading.Thread(target=lambda: (a.sendall(payload), a.close()))
    sender.start()
    reader = ul.SocketReader(b)
    try:
        assert reader.read(6) == payload[:6]
        assert reader.read(500_000) == payload[6:500_006]
        assert reader.read(1) == payload[500_006:500_007]
        rest = reader.read(len(payload))  # more than is left: what is left, then EOF
        assert rest == payload[500_007:]
        assert reader.read(10) == b""
    finally:
        sender.join()
        b.close()


def test_read_pdu_reads_a_p_data_tf_and_its_pdvs_through_the_reader() -> None:
    a, b = _tcp_pair()
    command = ul.echo_response(7, "1.2.840.10008.1.1")
    for pdu in ul.p_data(1, command, True, 0):
        a.sendall(pdu)
    a.close()
    kind, body = ul.read_pdu(ul.SocketReader(b))
    b.close()
    assert kind == ul.P_DATA_TF
    [(context, control, fragment)] = list(ul.pdvs(body))
    assert (context, control) == (1, 0x03) and bytes(fragment) == command
    elements = ul.decode_command(bytes(fragment))
    assert ul.us(elements, ul.COMMAND_FIELD) == ul.C_ECHO_RSP and ul.us(elements, ul.MESSAGE_ID_BEING_RESPONDED_TO) == 7
