"""Helpers for the web console's end-to-end tests: the [web] config with users and a token, HTTP with a
session or a token, and a real Prometheus server (Debian's ``prometheus``) scraping the node."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from types import TracebackType
from typing import Any

from argon2 import PasswordHasher

from node.web.auth import token_sha256
from tests.peers import free_port, wait_for
from tests.tools import require_tool

PASSWORD = "a long test password"
TOKEN = "scrape-token-for-the-tests-0123456789"
_hasher = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def web_config(port: int, *, viewer_url: str = "") -> str:
    """A [web] section with users viewer1 / radiologist1 / operator1 (password :data:`PASSWORD`) and a
    viewer token (:data:`TOKEN`)."""
    users = "".join(
        f'[[web.users]]\nname = "{role}1"\npassword_hash = "{_hasher.hash(PASSWORD)}"\nrole = "{role}"\n'
        for role in ("viewer", "radiologist", "operator")
    )
    viewer = f'viewer_url = "{viewer_url}"\n' if viewer_url else ""
    return (
        f'[web]\nenabled = true\nbind = "127.0.0.1"\nport = {port}\ncache_seconds = 0.5\n{viewer}{users}'
        f'[[web.tokens]]\nname = "prometheus"\nsha256 = "{token_sha256(TOKEN)}"\nrole = "viewer"\n'
    )


class Web:
    """A client of the node's web process: a session (cookie jar) or the bearer token."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.jar = CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def wait(self, timeout: float = 60.0) -> None:
        def up() -> bool | None:
            try:
                return self.get("/healthz", token=False) is not None or None
            except OSError:
                return None

        wait_for(up, timeout=timeout, interval=0.2, what="the web console")

    def request(
        self, path: str, data: dict[str, Any] | None = None, token: bool = True, headers: dict[str, str] | None = None
    ) -> bytes:
        body = None if data is None else urllib.parse.urlencode(data).encode()
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        if token:
            req.add_header("Authorization", f"Bearer {TOKEN}")
        with self.opener.open(req, timeout=30) as response:
            return bytes(response.read())

    def get(self, path: str, token: bool = True) -> bytes:
        return self.request(path, token=token)

    def json(self, path: str) -> Any:
        return json.loads(self.get(path))

    def login(self, name: str) -> str:
        """Log in with a session; returns the CSRF token of the pages."""
        self.request("/login", {"username": name, "password": PASSWORD}, token=False)
        page = self.get("/failures", token=False).decode()
        match = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert match, page[:300]
        return match.group(1)


class Prometheus:
    """Debian's Prometheus server on a free port, scraping ``target`` (host:port) every second with the token."""

    def __init__(self, target: str) -> None:
        self.binary = require_tool("prometheus", "prometheus")
        self.dir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        self.port = free_port()
        self.target = target
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Prometheus:
        config = self.dir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: pacs-node\n    metrics_path: /metrics\n"
            f"    authorization:\n      credentials: {TOKEN}\n"
            f"    static_configs:\n      - targets: ['{self.target}']\n",
            encoding="utf-8",
        )
        log = open(self.dir / "prometheus.log", "wb")  # closed once the process has it
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()

        def ready() -> bool | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                    return r.status == 200 or None
            except (OSError, urllib.error.URLError):
                return None

        wait_for(ready, timeout=60, interval=0.3, what="prometheus")
        return self

    def query(self, expression: str) -> list[Any]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?query={urllib.parse.quote(expression)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            data = json.loads(response.read())
        assert data["status"] == "success", data
        return list(data["data"]["result"])

    def targets(self) -> list[Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/targets", timeout=10) as response:
            return list(json.loads(response.read())["data"]["activeTargets"])

    def log(self) -> str:
        path = self.dir / "prometheus.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            shutil.rmtree(self.dir)


def promtool_check(text: bytes) -> subprocess.CompletedProcess[bytes]:
    """``promtool check metrics`` on an exposition (exit 0 and no output when it follows the conventions)."""
    return subprocess.run(
        [require_tool("promtool", "prometheus"), "check", "metrics"], input=text, capture_output=True, timeout=60
    )


def eventually(predicate: Any, timeout: float = 60.0, what: str = "") -> Any:
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.3)
