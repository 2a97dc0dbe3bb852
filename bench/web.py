"""Benchmark the web console on a large index: p50/p95 of every page and API call.

    .venv/bin/python bench/web.py [--studies 10000] [--instances 1000000] [--repeat 30] [--json FILE] [--keep]

Builds a data dir in a temp folder (not timed):

  index     ``--studies`` studies of ``--instances / --studies`` CT instances each (one series per study),
            arrivals spread over the last 7 days; the schema made by ``node.store.Index`` itself, the rows
            inserted in bulk (one transaction, ``executemany``: a million fsynced ``Index.record`` calls
            would take hours and measure the disk, not the console)
  job store per study one done ``analyse`` job and two done result sends, plus 200 dead and 100 retrying
            sends, through ``JobStore.enqueue_many`` and SQL updates of their state in bulk
  results   ``findings.json`` + ``manifest.json`` for the newest 2,000 analyses (what the worklist reads),
            a third of them with a HIGH finding
  feedback  500 verdicts through ``FeedbackStore.add``

then starts ``pacs-node web`` on it (its own process, as serve starts it; uvicorn, one event loop) and,
with one client (httpx, keep-alive, a session of an operator), requests every page and API call
``--repeat`` times after one warm-up request each, in rotation (so the 2 s cache of the overview and
models figures expires between some requests and not others, as it would under people). Reported per
request: p50, p95 and max in ms. The target (issue 13): p95 <= 300 ms on this 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from argon2 import PasswordHasher

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from node.jobs import JobStore, NewJob
from node.store import Index
from node.web.feedback import FeedbackStore

CT = "1.2.840.10008.5.1.4.1.1.2"
PASSWORD = "bench password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build(data: Path, studies: int, instances: int) -> list[str]:
    """The data dir; returns the study UIDs (newest last)."""
    data.mkdir(parents=True)
    Index(data / "index.sqlite3").close()
    now = time.time()
    per = max(1, instances // studies)
    uids = [f"1.2.826.0.1.3680043.8.498.{7000000 + i}" for i in range(studies)]
    db = sqlite3.connect(data / "index.sqlite3")
    db.execute("PRAGMA synchronous = OFF")
    with db:
        for i, study in enumerate(uids):
            t0 = now - 7 * 86400 + i * (7 * 86400 / studies)
            series = f"{study}.1"
            rows = [
                (
                    f"{series}.{k}",
                    study,
                    series,
                    CT,
                    "1.2.840.10008.1.2.1",
                    f"{study}/{series}/{k}.dcm",
                    524_288,
                    random.choice(("CT1", "CT2", "PACS")),
                    t0 + k * 0.01,
                    f"assoc-{i}",
                    "PACSNODE",
                    "10.0.0.5",
                )
                for k in range(per)
            ]
            db.executemany(
                "INSERT INTO instances (sop_instance_uid, study_instance_uid, series_instance_uid, sop_class_uid,"
                " transfer_syntax_uid, path, size, calling_ae, received_at, association_id, called_ae, source_address)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            last = t0 + per * 0.01
            db.execute(
                "INSERT INTO studies (study_instance_uid, first_received_at, last_received_at, last_activity_at,"
                " duplicates, completed_at) VALUES (?, ?, ?, ?, 0, ?)",
                (study, t0, last, last, last + 10),
            )
    db.close()
    jobs = JobStore(data / "jobs.sqlite3")
    new = []
    for study in uids:
        new.append(NewJob("analyse", {"study": study, "model": "lung-nodule-ct"}))
    ids = jobs.enqueue_many(new)
    sends = []
    for job_id, study in zip(ids, uids, strict=True):
        for n in range(2):
            sends.append(
                NewJob(
                    "send:pacs",
                    {
                        "path": f"outbox/analyse-{job_id}/R{n}.dcm",
                        "peer": "pacs",
                        "sop": f"{study}.9.{n}",
                        "sop_class": CT,
                    },
                )
            )
    jobs.enqueue_many(sends)
    jobs.close()
    db = sqlite3.connect(data / "jobs.sqlite3")
    with db:
        db.execute("UPDATE jobs SET state = 'done', attempts = 1, updated = created + 5")
        db.execute(
            "UPDATE jobs SET state = 'dead', last_error = 'connection refused' WHERE kind = 'send:pacs'"
            " AND id % 100 = 0"
        )
        db.execute(
            "UPDATE jobs SET state = 'queued', attempts = 3, last_error = 'timeout' WHERE kind = 'send:pacs'"
            " AND id % 200 = 1"
        )
    db.close()
    for n, job_id in enumerate(ids[-2000:]):
        series = f"{uids[ids.index(job_id)]}.1"
        folder = data / "outbox" / f"analyse-{job_id}" / series
        folder.mkdir(parents=True)
        high = n % 3 == 0
        finding = {
            "label": "Nodule",
            "number": 1,
            "volume_mm3": 400.0 if high else 40.0,
            "longest_axial_diameter_mm": 9.0 if high else 4.8,
            "centroid_mm": [10.0, 20.0, 30.0],
            "mean_value": 10.0,
            "segment_number": 2,
            "confidence": {"mean": 0.8, "max": 0.95},
            "key_slice": {"index": 5, "z_mm": 30.0, "sop_instance_uid": f"{series}.5", "area_mm2": 50.0},
        }
        (folder / "findings.json").write_text(
            json.dumps(
                {
                    "series_instance_uid": series,
                    "model": {"name": "lung-nodule-ct", "version": "1.1.0"},
                    "priority": "HIGH" if high else "ROUTINE",
                    "priority_reason": "bench",
                    "findings": [finding],
                    "files": [],
                }
            )
        )
        (folder.parent / "manifest.json").write_text('{"files": [], "series": {}}')
    feedback = FeedbackStore(data / "feedback.sqlite3")
    for job_id in ids[-500:]:
        series = f"{uids[ids.index(job_id)]}.1"
        feedback.add(
            analysis=job_id,
            series=series,
            number=1,
            study=uids[ids.index(job_id)],
            model="lung-nodule-ct",
            version="1.1.0",
            verdict=random.choice(("confirm", "reject")),
            reason="false positive",
            comment="",
            user="bench",
        )
    feedback.close()
    return uids


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument(
        "--cache-seconds", type=float, default=2.0, help="web.cache_seconds (0.001: every figure computed anew)"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()
    random.seed(1)
    root = Path(tempfile.mkdtemp(prefix="bench-web-"))
    data = root / "data"
    started = time.monotonic()
    uids = build(data, args.studies, args.instances)
    print(f"built {args.studies} studies, {args.instances} instances in {time.monotonic() - started:.0f} s ({root})")
    port = free_port()
    hashed = PasswordHasher().hash(PASSWORD)
    config = root / "node.toml"
    config.write_text(
        f'[node]\nae_title = "PACSNODE"\ndata_dir = "{data}"\n[limits]\nmin_free_disk_mb = 0\n'
        '[[peers]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 104\n'
        f"[web]\nenabled = true\nport = {port}\ncache_seconds = {args.cache_seconds}\n"
        f'[[web.users]]\nname = "op"\npassword_hash = "{hashed}"\n'
        'role = "operator"\n'
    )
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(root / "metrics"))
    (root / "metrics").mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "node", "web", "--config", str(config)], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=base, timeout=60) as client:
            for _ in range(200):
                try:
                    client.get("/healthz")
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            client.post("/login", data={"username": "op", "password": PASSWORD})
            study = uids[len(uids) // 2]
            paths = [
                "/",
                "/studies",
                "/studies?page_no=50",
                "/studies?modality=CT&calling_ae=CT1",
                f"/studies/{study}",
                "/failures",
                "/triage",
                "/models",
                "/audit",
                "/api/v1/overview",
                "/api/v1/studies",
                f"/api/v1/studies/{study}",
                "/api/v1/jobs?state=dead",
                "/api/v1/failures",
                "/api/v1/peers",
                "/api/v1/worklist",
                "/api/v1/worklist?priority=HIGH",
                "/api/v1/models",
                "/api/v1/audit",
                "/api/v1/feedback.csv",
                "/metrics",
                "/healthz",
                "/readyz",
            ]
            times: dict[str, list[float]] = {p: [] for p in paths}
            for path in paths:
                response = client.get(path)
                if response.status_code not in (200, 503):
                    raise SystemExit(f"{path}: HTTP {response.status_code}: {response.text[:300]}")
            for _ in range(args.repeat):
                for path in paths:
                    t0 = time.perf_counter()
                    client.get(path)
                    times[path].append((time.perf_counter() - t0) * 1000)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    report = {}
    print(f"{'request':<42} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    for path, values in times.items():
        values.sort()
        p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
        report[path] = {"p50_ms": statistics.median(values), "p95_ms": p95, "max_ms": values[-1]}
        print(f"{path:<42} {statistics.median(values):8.1f} {p95:8.1f} {values[-1]:8.1f}")
    worst = max(r["p95_ms"] for r in report.values())
    print(f"worst p95: {worst:.1f} ms (target <= 300 ms)")
    if args.json:
        args.json.write_text(
            json.dumps({"studies": args.studies, "instances": args.instances, "requests": report}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
