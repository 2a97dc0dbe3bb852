"""The node's processes: serve's children (workers, the sender), whose jobs they held, and signals.

serve starts its children with :class:`ChildProcesses` and restarts one that dies; a child watches serve's
pid (:func:`watch_parent`) so that it never outlives a killed serve; lease owners name their pid, so the
jobs of a dead process go back to the queue at once (:func:`owner_pid`, :func:`owner_gone`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)


def owner_pid(owner: str) -> int | None:
    """The pid in a lease owner's name on this host: ``sender-<pid>-<peer>-<n>`` (serve's child) or
    ``worker-<host>-<pid>``; ``None`` for other owners (another host's worker, a test's name)."""
    if owner.startswith("sender-"):
        pid = owner.removeprefix("sender-").split("-", 1)[0]
    elif owner.startswith(f"worker-{socket.gethostname()}-"):
        pid = owner.rsplit("-", 1)[1]
    else:
        return None
    return int(pid) if pid.isdigit() else None


def owner_gone(owner: str) -> bool:
    """Whether the process that holds a lease is dead (on this host; other hosts' owners never are)."""
    pid = owner_pid(owner)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:  # a killed child nobody has reaped yet is a zombie: gone, though its pid still answers
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def watch_parent(stop: threading.Event, parent: int | None) -> None:
    """Stop (as on SIGTERM) when serve, our parent, dies: a worker or sender must not outlive a killed serve.

    ``parent`` is serve's pid, given on the command line: a child that starts after serve already died
    would otherwise take its new parent (init) for serve and never notice.
    """
    if parent is None:
        return  # started by a person or by systemd, not by serve

    def watch() -> None:
        while not stop.wait(1.0):
            if os.getppid() != parent:
                log.warning("parent process %d is gone: stopping", parent)
                stop.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class ChildProcesses:
    """``count`` processes running ``command``, restarted when one dies (after a pause: a crash loop stays slow)."""

    def __init__(
        self,
        name: str,
        command: list[str],
        count: int,
        restart_delay_s: float = 5.0,
        on_exit: Callable[[int], object] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.on_exit = on_exit  # called with the pid of a child that exited (its jobs go back at once)
        self.env = env  # variables added to this process's environment for the children (a secret, say)
        self.name = name
        self.command = command
        self.count = count
        self.restart_delay_s = restart_delay_s
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self._died_at: list[float] = [0.0] * count
        self._terminated: set[int] = set()

    def start(self) -> None:
        for slot in range(self.count):
            self._spawn(slot)

    def _spawn(self, slot: int) -> None:
        env = None if self.env is None else {**os.environ, **self.env}
        self._procs[slot] = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, env=env)
        log.info("%s %d started (pid %d)", self.name, slot + 1, self._procs[slot].pid)  # type: ignore[union-attr]

    def supervise(self) -> None:
        """Restart workers that exited; call periodically."""
        now = time.monotonic()
        for slot, proc in enumerate(self._procs):
            if proc is None or proc.poll() is None:
                continue
            if not self._died_at[slot]:
                self._died_at[slot] = now
                if self.on_exit is not None:
                    self.on_exit(proc.pid)
                log.warning(
                    "%s %d (pid %d) exited with code %s; restarting it", self.name, slot + 1, proc.pid, proc.returncode
                )
            if now - self._died_at[slot] >= self.restart_delay_s:
                self._died_at[slot] = 0.0
                self._spawn(slot)

    def alive(self) -> int:
        return sum(1 for p in self._procs if p is not None and p.poll() is None)

    def terminate(self) -> None:
        """SIGTERM every process without waiting (:meth:`stop` then waits for them)."""
        for proc in self._procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                self._terminated.add(proc.pid)

    def stop(self, deadline_s: float) -> None:
        """SIGTERM every process (each releases its jobs), SIGKILL what is left after the deadline."""
        procs = [p for p in self._procs if p is not None and p.poll() is None]
        for proc in procs:
            if proc.pid not in self._terminated:  # a second SIGTERM would make it exit without draining
                proc.send_signal(signal.SIGTERM)
        end = time.monotonic() + deadline_s
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning(
                    "%s pid %d did not stop within %.0f s: killed (its lease expires)", self.name, proc.pid, deadline_s
                )
                proc.kill()
                proc.wait()


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop``; a second one exits at once."""

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second %s: exiting without draining", signal.Signals(signum).name)
            os._exit(1)
        log.info("%s: draining", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
