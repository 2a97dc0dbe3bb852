"""Does the web console slow the receiver? bench/ingest.py's mode a with and without a client polling the
overview every 2 s, in the same run.

    .venv/bin/python bench/web_ingest.py [--repeat 5] [--slices 300] [--json FILE]

The series is bench/ingest.py's (``pacs-node synth ct --seed 3``, 512x512, about 512 KiB a file). Each
repetition starts two fresh ``pacs-node serve`` (workers count 0, no models: the receive path only, and
``[web] enabled``, so the web process runs in both) on empty data dirs, one after the other, in
alternating order, and sends the series with one DCMTK ``storescu`` (TCP_NODELAY=1, one association):

  quiet    nobody asks the web process anything
  polled   a client GETs ``/api/v1/overview`` (bearer token) every 2 s while the series arrives, and once
           just before the first C-STORE (the first request of a fresh web process is its slowest)

instances/s = files / storescu wall time; the node must have indexed every file. Figures: medians over
--repeat runs and their ratio (target: polled within 5 % of quiet).
"""

from __future__ import annotations

import argparse
import json
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from ingest import node_index_count, write_series  # bench/ingest.py

from node.web.auth import token_sha256
from tests.peers import echoscu, free_port, storescu, wait_for


def start_node(workdir: Path, token: str) -> tuple[subprocess.Popen[bytes], int, int, Path]:
    workdir.mkdir(parents=True)
    port, web_port = free_port(), free_port()
    data = workdir / "data"
    (workdir / "node.toml").write_text(
        f'[node]\nae_title = "PACSNODE"\nport = {port}\ndata_dir = "{data}"\n[limits]\nmin_free_disk_mb = 0\n'
        '[workers]\ncount = 0\n[[peers]]\nname = "scanner"\nae_title = "STORESCU"\nallow_store = true\n'
        f'[web]\nenabled = true\nport = {web_port}\n[[web.tokens]]\nname = "bench"\nsha256 = "{token_sha256(token)}"\n'
    )
    with (workdir / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node", "serve", "--config", str(workdir / "node.toml")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    wait_for(lambda: echoscu(port, aec="PACSNODE", aet="STORESCU", check=False).returncode == 0, timeout=60)
    return proc, port, web_port, data


def overview(web_port: int, token: str) -> None:
    req = urllib.request.Request(f"http://127.0.0.1:{web_port}/api/v1/overview")
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=30) as response:
        response.read()


def one_run(series: Path, files: int, workdir: Path, polled: bool) -> tuple[float, int]:
    token = secrets.token_urlsafe(24)
    proc, port, web_port, data = start_node(workdir, token)
    stop = threading.Event()
    polls = 0
    try:
        wait_for(lambda: _answers(web_port, token), timeout=60, interval=0.2, what="the web process")

        def poll() -> None:
            nonlocal polls
            while True:
                overview(web_port, token)
                polls += 1
                if stop.wait(2.0):
                    return

        poller = threading.Thread(target=poll, daemon=True)
        if polled:
            poller.start()
        began = time.perf_counter()
        storescu(series, port, aec="PACSNODE", nodelay=True, timeout=600)
        seconds = time.perf_counter() - began
        stop.set()
        if polled:
            poller.join(30)
        if node_index_count(data) != files:
            raise SystemExit(f"the node indexed {node_index_count(data)} of {files} files")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return files / seconds, polls


def _answers(web_port: int, token: str) -> bool:
    try:
        overview(web_port, token)
    except OSError:
        return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-web-ingest-"))
    series = root / "ct"
    files = len(write_series(series, args.slices, 3))
    rates: dict[str, list[float]] = {"quiet": [], "polled": []}
    for rep in range(args.repeat):
        order = ("quiet", "polled") if rep % 2 == 0 else ("polled", "quiet")
        for name in order:
            rate, polls = one_run(series, files, root / f"{name}-{rep}", name == "polled")
            rates[name].append(rate)
            print(f"run {rep + 1} {name:<6} {rate:6.1f} instances/s ({polls} overview requests)", flush=True)
    quiet, polled = statistics.median(rates["quiet"]), statistics.median(rates["polled"])
    print(f"median: quiet {quiet:.1f}/s, polled {polled:.1f}/s, polled / quiet {polled / quiet:.3f} (target >= 0.95)")
    if args.json:
        args.json.write_text(json.dumps({"rates": rates, "quiet": quiet, "polled": polled}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
