"""Benchmark: does the per-instance and per-tick work of the node grow with what the index holds?

    .venv/bin/python bench/index_scale.py [--instances 1000000] [--studies 10000] [--repeat 7] [--json FILE]

Builds two data dirs side by side: an empty index, and one filled in bulk with ``--instances`` rows in
``--studies`` complete studies (received a day ago, all routed: the steady state of a busy node that keeps
seven days). On each, with the real objects serve uses (Index, Spool, JobStore, RoutingLog, Router,
CompletionTimer's query, Retention), it times:

  index row    the index work of one C-STORE as serve does it (``Index.record`` without a sync: the
               receive journal makes it durable), 500 instances of a new study; p50 and p95 per instance
  c-store      the whole of a C-STORE's work in the node as serve's handler does it (``StoreHandler.store``
               with its receive journal: identify, journal append and group-committed sync, spool file,
               index row), 200 small CT instances of a new study on one association; p50 and p95: the
               store latency a sender sees, less the network
  completion   one completion-timer tick (``Index.quiet_studies``) with one study open
  router       one router pass (``Router.route_new``) over 100 new instances of a new study, each read from
               a real spool file and forwarded by an instance-level rule (a ``send:archive`` job each)
  retention    one retention pass (``Retention.run_pass``, keep_days = 7: nothing is old enough)

and prints filled / empty per operation (target: within 1.10 for the C-STORE, the tick and the passes; the
index row alone is shown beside them), medians of ``--repeat`` rounds; then the
query plan of each query these run, flagging any full-table SCAN. Nothing is sent over the network.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pydicom import dcmwrite

from node.config import parse_config
from node.jobs import JobStore
from node.receive.handlers import Caller, StoreHandler, StoreRequest
from node.routing import Router
from node.routing.log import RoutingLog
from node.store import DiskGuard, Index, Spool
from node.store.journal import JOURNAL_DIR, Journal
from node.store.retention import Retention
from tests.helpers import encode_dataset, node_toml, tiny_ct

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"

CONFIG = """
[retention]
keep_days = 7
[[peers]]
name = "scanner"
ae_title = "STORESCU"
allow_store = true
[[peers]]
name = "archive"
ae_title = "ARCHIVE"
host = "127.0.0.1"
port = 104
[[rules]]
name = "every-instance-to-the-archive"
level = "instance"
when = { attribute = "Modality", equals = "CT" }
forward = ["archive"]
"""
DAY = 86_400.0


class Node:
    """The stores of one data dir, as serve builds them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        data = folder / "data"
        self.config = parse_config(node_toml(data, 11112, peers=" ") + CONFIG)
        node = self.config.node
        for sub in (node.data_dir, node.spool_dir, node.outbox_dir):
            sub.mkdir(parents=True, exist_ok=True)
        self.spool = Spool(node.spool_dir)
        self.index = Index(node.index_path)
        self.jobs = JobStore(node.jobs_path)
        self.log = RoutingLog(node.data_dir / "routing.sqlite3")
        self.router = Router(self.config, self.index, self.jobs, self.log)
        self.retention = Retention(self.config, self.index, self.jobs, routed_up_to=self.log.cursor)
        self.serial = 0
        self._handler: StoreHandler | None = None

    @property
    def handler(self) -> StoreHandler:
        """serve's C-STORE handler on this data dir, with its receive journal (built after :meth:`fill`)."""
        if self._handler is None:
            node = self.config.node
            self.journal = Journal(node.data_dir / JOURNAL_DIR)
            self._handler = StoreHandler(self.spool, self.index, DiskGuard(node.data_dir, 0), journal=self.journal)
        return self._handler

    def fill(self, instances: int, studies: int) -> None:
        """Bulk rows straight into SQLite (no files): complete studies, received a day ago, all routed."""
        path = self.config.node.index_path
        self.index.close()
        now = time.time() - DAY
        per_study = max(1, instances // studies)
        db = sqlite3.connect(path)
        with db:
            db.executemany(
                "INSERT INTO studies (study_instance_uid, first_received_at, last_received_at, last_activity_at,"
                " duplicates, completed_at) VALUES (?, ?, ?, ?, 0, ?)",
                ((f"2.25.{s}", now + s, now + s, now + s, now + s + 10) for s in range(studies)),
            )
            db.executemany(
                "INSERT INTO instances (sop_instance_uid, study_instance_uid, series_instance_uid, sop_class_uid,"
                " transfer_syntax_uid, path, size, calling_ae, received_at, association_id)"
                " VALUES (?, ?, ?, '1.2.840.10008.5.1.4.1.1.2', '1.2.840.10008.1.2.1', ?, 540000, 'STORESCU', ?, 'a')",
                (
                    (
                        f"2.25.{i // per_study}.{i}",
                        f"2.25.{i // per_study}",
                        f"2.25.{i // per_study}.1",
                        f"2.25.{i // per_study}/2.25.{i // per_study}.1/2.25.{i // per_study}.{i}.dcm",
                        now + i / per_study,
                    )
                    for i in range(instances)
                ),
            )
        top = db.execute("SELECT MAX(rowid) FROM instances").fetchone()[0]
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        db.close()
        self.index = Index(path)
        self.log.advance(int(top))
        self.router = Router(self.config, self.index, self.jobs, self.log)
        self.retention = Retention(self.config, self.index, self.jobs, routed_up_to=self.log.cursor)

    def new_study(self) -> str:
        self.serial += 1
        return f"1.2.826.0.1.3680043.10.9999.{self.serial}"

    def store(self, count: int) -> list[float]:
        """Seconds of the index work per instance for ``count`` instances of a new study."""
        study = self.new_study()
        times = []
        for n in range(count):
            began = time.perf_counter()
            self.index.record(
                sop_instance_uid=f"{study}.1.{n}",
                study_instance_uid=study,
                series_instance_uid=f"{study}.1",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                path=f"{study}/{study}.1/{study}.1.{n}.dcm",
                size=540000,
                calling_ae="STORESCU",
                association_id="bench",
                durable=False,
            )
            times.append(time.perf_counter() - began)
        return times

    def c_store(self, count: int) -> list[float]:
        """Seconds of ``StoreHandler.store`` per instance for ``count`` small CT instances of a new study."""
        study = self.new_study()
        series = f"{study}.1"
        caller = Caller("bench", "STORESCU", "PACSNODE", "127.0.0.1")
        self.handler.opened(caller)
        times = []
        try:
            for n in range(count):
                sop = f"{series}.{n}"
                ds = tiny_ct(study, series, sop, index=n)
                request = StoreRequest(n + 1, CT, sop, CT, EXPLICIT, encode_dataset(ds, EXPLICIT))
                began = time.perf_counter()
                status, _ = self.handler.store(caller, request)
                times.append(time.perf_counter() - began)
                assert status == 0, f"C-STORE answered 0x{status:04X}"
        finally:
            self.handler.closed(caller)
        return times

    def completion_tick(self) -> float:
        study = self.new_study()
        self.store(1)  # one open study, as while a scanner sends
        began = time.perf_counter()
        self.index.quiet_studies(time.time(), 2.0, 600.0)
        del study
        return time.perf_counter() - began

    def router_pass(self, count: int = 100) -> float:
        """Write ``count`` instances of a new study (files and rows), then time one router pass over them."""
        # Rows of the other operations have no files: the router has seen them (as serve's would have).
        latest = self.index.instances_after(self.log.cursor(), 1_000_000)
        if latest:
            self.log.advance(latest[-1][0])
        study = self.new_study()
        series = f"{study}.1"
        for n in range(count):
            sop = f"{series}.{n}"
            ds = tiny_ct(study, series, sop, index=n)
            path = self.spool.path_for(study, series, sop)
            path.parent.mkdir(parents=True, exist_ok=True)
            dcmwrite(path, ds, enforce_file_format=True)
            self.index.record(
                sop_instance_uid=sop,
                study_instance_uid=study,
                series_instance_uid=series,
                sop_class_uid=str(ds.SOPClassUID),
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                path=self.spool.relative_path(study, series, sop),
                size=path.stat().st_size,
                calling_ae="STORESCU",
                association_id="bench",
                durable=False,
            )
        began = time.perf_counter()
        routed = self.router.route_new(limit=count)
        elapsed = time.perf_counter() - began
        assert routed == count, f"the router routed {routed} of {count}"
        return elapsed

    def retention_pass(self) -> float:
        began = time.perf_counter()
        deleted = self.retention.run_pass()
        elapsed = time.perf_counter() - began
        assert deleted == 0, "nothing is old enough to delete"
        return elapsed

    def plans(self) -> dict[str, list[str]]:
        """EXPLAIN QUERY PLAN of the queries the timed operations run."""
        now = time.time()
        queries = {
            "completion: quiet studies": (
                "SELECT study_instance_uid FROM studies WHERE completed_at IS NULL"
                " AND (last_activity_at <= ? - COALESCE(quiet_seconds, ?) OR COALESCE(watch_from, first_received_at)"
                " <= ?) ORDER BY first_received_at",
                (now, 2.0, now - 600),
            ),
            "router: feed": ("SELECT rowid FROM instances WHERE rowid > ? ORDER BY rowid LIMIT 500", (0,)),
            "store: study complete?": ("SELECT completed_at FROM studies WHERE study_instance_uid = ?", ("x",)),
            "retention: finished studies": (
                "SELECT study_instance_uid, last_received_at FROM studies WHERE completed_at IS NOT NULL"
                " AND last_activity_at <= ? - COALESCE(quiet_seconds, ?)"
                " AND (last_received_at, study_instance_uid) > (?, ?) AND last_received_at <= ?"
                " AND study_instance_uid NOT IN (SELECT study_instance_uid FROM deleting)"
                " ORDER BY last_received_at, study_instance_uid LIMIT ?",
                (now, 2.0, float("-inf"), "", now - 7 * DAY, 200),
            ),
        }
        db = sqlite3.connect(f"file:{self.config.node.index_path}?mode=ro", uri=True)
        try:
            return {
                name: [str(row[3]) for row in db.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
                for name, (sql, params) in queries.items()
            }
        finally:
            db.close()

    def close(self) -> None:
        if self._handler is not None:
            self.journal.close()
        self.index.close()
        self.jobs.close()
        self.log.close()


def median_ms(run: Callable[[], float], repeat: int) -> float:
    return statistics.median(run() for _ in range(repeat)) * 1000


def measure(node: Node, repeat: int) -> dict[str, float]:
    store = sorted(t for _ in range(max(1, repeat // 3)) for t in node.store(500))
    c_store = sorted(t for _ in range(max(1, repeat // 3)) for t in node.c_store(200))
    return {
        "index row p50 ms": store[len(store) // 2] * 1000,
        "index row p95 ms": store[int(len(store) * 0.95)] * 1000,
        "c-store p50 ms": c_store[len(c_store) // 2] * 1000,
        "c-store p95 ms": c_store[int(len(c_store) * 0.95)] * 1000,
        "completion tick ms": median_ms(node.completion_tick, repeat * 5),
        "router pass (100) ms": median_ms(node.router_pass, repeat),
        "retention pass ms": median_ms(node.retention_pass, repeat),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1_000_000, help="rows in the filled index (default 1M)")
    parser.add_argument("--studies", type=int, default=10_000, help="studies they belong to (default 10,000)")
    parser.add_argument("--repeat", type=int, default=7, help="rounds per operation, medians (default 7)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="index-scale-") as tmp:
        empty, filled = Node(Path(tmp) / "empty"), Node(Path(tmp) / "filled")
        began = time.monotonic()
        print(f"filling an index with {args.instances:,} instances in {args.studies:,} studies ...", flush=True)
        filled.fill(args.instances, args.studies)
        print(f"  {time.monotonic() - began:.0f} s", flush=True)
        results: dict[str, dict[str, float]] = {"empty": {}, "filled": {}}
        # Alternate the two, round by round, so that the machine's load falls on both alike.
        rounds = []
        for _ in range(3):
            for name, node in (("empty", empty), ("filled", filled)):
                rounds.append((name, measure(node, args.repeat)))
        for name in ("empty", "filled"):
            figures = [r for n, r in rounds if n == name]
            results[name] = {k: statistics.median(f[k] for f in figures) for k in figures[0]}
        plans = filled.plans()
        empty.close()
        filled.close()
    print(f"\nindex scale: empty vs {args.instances:,} instances in {args.studies:,} studies (medians)")
    print(f"  {'operation':<24}{'empty':>10}{'filled':>10}{'ratio':>8}")
    worst = 0.0
    for key in results["empty"]:
        a, b = results["empty"][key], results["filled"][key]
        ratio = b / a if a else float("nan")
        if not key.startswith("index row"):  # a part of the C-STORE, shown to say where growth would come from
            worst = max(worst, ratio)
        print(f"  {key:<24}{a:>10.3f}{b:>10.3f}{ratio:>8.2f}")
    verdict = "met" if worst <= 1.10 else "NOT met"
    print(f"  target: c-store, completion, router and retention ratios <= 1.10: {verdict} (worst {worst:.2f})")
    print("  (index row: the C-STORE's SQLite insert alone, a few microseconds that grow with the B-trees)")
    print("\nquery plans on the filled index:")
    for name, steps in plans.items():
        flag = "  <- full SCAN" if any(s.startswith("SCAN ") and " USING " not in s for s in steps) else ""
        print(f"  {name}: {' | '.join(steps)}{flag}")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "plans": plans}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
