"""A doorbell between the node's processes: a Unix datagram socket in the data dir's ``run/`` folder.

One process binds it and wakes a thread on every datagram (:meth:`Bell.listen`); any process rings it
(:meth:`Bell.ring`) after it wrote something the listener should look at now rather than at its next poll:
the receiver processes after a new index row (serve's router listens), the router after new send jobs (the
sender listens). The database stays the only channel of data: a ring carries nothing, and ringing never
blocks and never fails its caller (nobody listening, a full queue: the datagram is dropped, and the
listener finds the work at its next poll).
"""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

RUN_DIR = "run"  # under node.data_dir
ROUTER = "router.sock"
SENDER = "sender.sock"


class Bell:
    """The bell at ``data_dir/run/<name>``."""

    def __init__(self, data_dir: Path, name: str) -> None:
        folder = Path(data_dir) / RUN_DIR
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / name
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def ring(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.sendto(b"!", str(self.path))

    def listen(self, wake: threading.Event, stop: threading.Event) -> threading.Thread:
        """Bind, then set ``wake`` on every datagram until ``stop``; returns the (daemon) thread."""
        self.path.unlink(missing_ok=True)
        self._sock.bind(str(self.path))
        self._sock.settimeout(0.5)

        def loop() -> None:
            while not stop.is_set():
                try:
                    self._sock.recv(64)
                except TimeoutError:
                    continue
                except OSError:
                    return
                wake.set()

        thread = threading.Thread(target=loop, name=f"bell-{self.path.stem}", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self._sock.close()
