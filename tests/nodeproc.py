"""``pacs-node serve`` as a subprocess with a temporary config, for end-to-end and crash tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from tests.peers import free_port


class NodeProcess:
    """Runs ``python -m node serve --config <dir>/node.toml``; its log goes to ``<dir>/serve.log``.

    ``config`` is the TOML text without the ``[node]`` table, which this class writes (ae_title PACSNODE,
    127.0.0.1, a free port, data_dir ``<dir>/data``).
    """

    def __init__(self, directory: Path, config: str, *, ae_title: str = "PACSNODE") -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.ae_title = ae_title
        self.data_dir = self.dir / "data"
        self.config_path = self.dir / "node.toml"
        self.config_path.write_text(
            f'[node]\nae_title = "{ae_title}"\nbind = "127.0.0.1"\nport = {self.port}\n'
            f'data_dir = "{self.data_dir}"\n\n{config}\n',
            encoding="utf-8",
        )
        self.log_path = self.dir / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child writes to it; closed with the process)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "node", "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        log.close()
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"serve did not listen within {timeout} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (drain) and wait; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"serve did not stop within {timeout} s:\n{self.log()[-3000:]}") from None

    def kill(self) -> None:
        """SIGKILL serve and its workers (a crash: nothing gets to clean up)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        children = _children(self.proc.pid)
        self.proc.kill()
        self.proc.wait()
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def __enter__(self) -> NodeProcess:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            self.stop()
        finally:
            self.kill()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]
