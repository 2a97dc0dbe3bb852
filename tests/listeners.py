"""Real receivers of notifications on 127.0.0.1 for tests: an HTTP(S) webhook listener and an MLLP listener.

Both are context managers that stop their server on exit, also when the body fails. The port is chosen
when the object is made, so a test can let a sender fail against a closed port first and then
:meth:`start` the listener on that same port ("the receiver comes back").
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

import hl7
from hl7.mllp import start_hl7_server

from tests.peers import HOST, free_port


@dataclass(frozen=True)
class Request:
    """One POST the webhook listener received."""

    path: str
    headers: dict[str, str]
    body: bytes


class WebhookListener:
    """An HTTP server (``http.server``) recording every POST and answering ``status`` (200 by default).

    With ``tls`` (an :class:`ssl.SSLContext` for a server), it speaks HTTPS.
    """

    def __init__(self, status: int = 200, tls: ssl.SSLContext | None = None) -> None:
        self.port = free_port()
        self.status = status
        self.tls = tls
        self.requests: list[Request] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}/hooks/results"

    def start(self) -> Self:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                listener.requests.append(Request(self.path, dict(self.headers.items()), body))
                self.send_response(listener.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((HOST, self.port), Handler)
        if self.tls is not None:
            server.socket = self.tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class MllpListener:
    """An HL7 interface engine stand-in: python-hl7's MLLP server on its own event loop (a thread).

    It parses each message it receives and answers with ``ack(message)`` (an ACK made by
    :meth:`hl7.Message.create_ack`: ``AA`` by default), or with nothing when ``ack`` returns ``None``.
    """

    def __init__(self, ack: Callable[[Any], Any | None] | None = None) -> None:
        self.port = free_port()
        self.messages: list[Any] = []
        self.raw: list[str] = []
        self._ack = ack or (lambda message: message.create_ack("AA"))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    async def _client(self, reader: Any, writer: Any) -> None:
        try:
            while not reader.at_eof():
                message = await reader.readmessage()
                self.raw.append(str(message))
                self.messages.append(message)
                answer = self._ack(message)
                if answer is not None:
                    writer.writemessage(answer)
                    await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    def start(self) -> Self:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                start_hl7_server(self._client, HOST, self.port, encoding="utf-8")
            )
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the MLLP listener did not start")
        return self

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None:
            return

        async def close() -> None:
            if server is not None:
                server.close()
                await server.wait_closed()
            loop.stop()

        asyncio.run_coroutine_threadsafe(close(), loop)
        if self._thread is not None:
            self._thread.join(5)
        loop.close()
        self._loop = self._server = self._thread = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def parse(text: str) -> Any:
    """An HL7 message parsed by python-hl7 (segments separated by carriage returns)."""
    return hl7.parse(text)
