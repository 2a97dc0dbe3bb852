"""Benchmark instance-level forwarding: storescu -> node -> storescp, beside storescu -> storescp directly.

    .venv/bin/python bench/route.py [--repeat 5] [--slices 300] [--associations 2] [--json FILE] [--keep]

Writes a phantom CT series once (``pacs-node synth ct --seed 3``: 512x512 int16 slices, about 512 KiB a
file; bench/ingest.py's generator) and, per repetition, sends it twice with DCMTK ``storescu`` (one
association, TCP_NODELAY=1), in alternating order (direct first in odd repetitions, node first in even
ones):

  direct  storescu -> DCMTK storescp (``+xa``: every transfer syntax; TCP_NODELAY=1; writes each file
          before it answers, never fsyncs, serves one association at a time)
  node    storescu -> ``pacs-node serve`` -> storescp (the same kind, a fresh one). The node: workers count
          0, no [analysis] (with [[rules]], analysis.models may not be written), one rule
          ``level = "instance"``, ``when = Modality equals CT``, ``forward = ["scp"]``, so every instance
          is queued as a ``send:scp`` job as it is indexed, while the rest of the series still arrives;
          ``sender.associations_per_peer = --associations``; other settings at their defaults

Every run starts a fresh storescp on an empty output folder and, for the node, a fresh ``pacs-node serve``
on an empty data_dir (tests/nodeproc.py), which must answer C-ECHO before the run starts; start-up is not
timed. Clocks are the wall clock (epoch seconds), shared with the node's own stamps. Measured per run:

  direct inst/s    files / storescu wall time (start to exit; storescp has written every file by then)
  receive inst/s   files / storescu wall time into the node (the node's C-STORE responses come after
                   the durable write and the index row, as in bench/ingest.py)
  e2e inst/s       files / (storescu start -> storescp's folder holds all files, polled every 20 ms)
  latency p50/p95  per instance, "received" -> "peer success", under that load: received is the node's
                   index stamp (index.sqlite3 ``instances.received_at``), peer success the send job's
                   completion (jobs.sqlite3 ``jobs.updated`` of the ``send:scp`` job in state done, which
                   the node writes when storescp's success status arrives), joined on SOP Instance UID
  node CPU s       user + system CPU time of the serve process from storescu start to the last send done
                   (two cores here: storescu, the node and storescp share them)

Checked every run, or the benchmark fails: storescu exits 0; storescp holds exactly the series' SOP
Instance UIDs (each file's SOPInstanceUID, which must also be its name ``<modality>.<uid>``), each file's
PixelData identical to the source's (SHA-256); the node indexed every instance; every ``send:scp`` job is
done (none queued, running or dead), one per instance; serve exits 0 on SIGTERM. Figures are medians over
--repeat runs; "node e2e / direct" is the ratio of the median instances/s.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import BenchError, cpu_seconds, say, tail, versions, write_series
from tests.nodeproc import NodeProcess
from tests.peers import PeerError, StoreSCP, echoscu, storescu, wait_for

NODE_AET = "PACSNODE"
SENDER_AET = "STORESCU"
SCP_AET = "STORESCP"
PEER = "scp"
SEND_KIND = f"send:{PEER}"
TOOLS = ("storescu", "storescp", "echoscu")
POLL_S = 0.02  # storescp's folder, while timing end-to-end


@dataclass
class Run:
    """One repetition: the direct transfer and the transfer through the node; seconds unless named."""

    rep: int
    order: str  # "direct,node" or "node,direct"
    files: int
    direct_s: float
    direct_per_s: float
    receive_s: float
    receive_per_s: float
    e2e_s: float
    e2e_per_s: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_max_ms: float
    first_forward_s: float  # storescu start -> the first peer success
    node_cpu_s: float
    retried: int  # send jobs that needed more than one attempt


def node_config(scp: StoreSCP, associations: int) -> str:
    """Everything but ``[node]`` (NodeProcess writes that)."""
    return f"""\
[limits]
min_free_disk_mb = 0

[workers]
count = 0

[sender]
associations_per_peer = {associations}

[[peers]]
name = "scanner"
ae_title = "{SENDER_AET}"
allow_store = true

[[peers]]
name = "{PEER}"
ae_title = "{scp.aet}"
host = "127.0.0.1"
port = {scp.port}

[[rules]]
name = "ct-to-scp"
level = "instance"
when = {{ attribute = "Modality", equals = "CT" }}
forward = ["{PEER}"]
"""


# -- checks ---------------------------------------------------------------------------------------------


def pixel_digests(files: list[Path]) -> dict[str, str]:
    """SOP Instance UID -> SHA-256 of PixelData, for each file."""
    out: dict[str, str] = {}
    for path in files:
        ds = dcmread(path)
        out[str(ds.SOPInstanceUID)] = hashlib.sha256(ds.PixelData).hexdigest()
    return out


def check_received(scp: StoreSCP, expected: dict[str, str], what: str) -> None:
    """storescp holds exactly the expected instances, named after their UIDs, with identical pixels."""
    got = pixel_digests(scp.files())
    names = {p.name.split(".", 1)[1] if "." in p.name else p.name for p in scp.files()}
    if len(scp.files()) != len(expected) or got.keys() != expected.keys() or names != expected.keys():
        missing = sorted(expected.keys() - got.keys())
        extra = sorted(got.keys() - expected.keys())
        raise BenchError(
            f"{what}: storescp holds {len(scp.files())} files ({len(got)} distinct SOP Instance UIDs), expected "
            f"exactly {len(expected)}; missing {len(missing)} {missing[:3]}, unexpected {len(extra)} {extra[:3]}; "
            f"names that are not <modality>.<uid> of a file: {sorted(names - got.keys())[:3]}"
        )
    changed = [sop for sop, digest in got.items() if digest != expected[sop]]
    if changed:
        raise BenchError(
            f"{what}: PixelData of {len(changed)} received instances differs from the source: {changed[:3]}"
        )


def read_db(path: Path, query: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        return list(db.execute(query))


def send_jobs(data_dir: Path) -> list[tuple[str, str, int, float]]:
    """(SOP Instance UID, state, attempts, updated) of every send job; none before the job store exists."""
    path = data_dir / "jobs.sqlite3"
    if not path.exists():
        return []
    rows = read_db(path, "SELECT kind, payload, state, attempts, updated FROM jobs WHERE kind LIKE 'send:%'")
    out = []
    for kind, payload, state, attempts, updated in rows:
        if kind != SEND_KIND:
            raise BenchError(f"a send job of kind {kind!r}: only {SEND_KIND!r} was expected")
        out.append((str(json.loads(payload)["sop"]), str(state), int(attempts), float(updated)))
    return out


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks (numpy's default)."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# -- the two transfers ----------------------------------------------------------------------------------


def direct(folder: Path, expected: dict[str, str], workdir: Path) -> float:
    """storescu -> a fresh storescp; the storescu wall time."""
    with StoreSCP(workdir / "received", transfer_syntaxes="all", aet=SCP_AET, nodelay=True) as scp:
        began = time.perf_counter()
        storescu(folder, scp.port, aet=SENDER_AET, aec=scp.aet, nodelay=True, timeout=600)
        wall = time.perf_counter() - began
        check_received(scp, expected, "direct")
    return wall


@dataclass
class Through:
    receive_s: float
    e2e_s: float
    latencies: list[float]
    first_forward_s: float
    node_cpu_s: float
    retried: int


def through_node(folder: Path, expected: dict[str, str], workdir: Path, args: argparse.Namespace) -> Through:
    """storescu -> a fresh node -> a fresh storescp; timings and per-instance latencies."""
    files = len(expected)
    with StoreSCP(workdir / "received", transfer_syntaxes="all", aet=SCP_AET, nodelay=True) as scp:
        node = NodeProcess(workdir / "node", node_config(scp, args.associations), ae_title=NODE_AET)
        try:
            try:
                node.start()
            except RuntimeError as error:
                raise BenchError(str(error)) from None

            def alive() -> None:
                if node.proc is not None and node.proc.poll() is not None:
                    raise BenchError(
                        f"pacs-node serve exited with status {node.proc.returncode}:\n{tail(node.log_path)}"
                    )
                if not scp.running:
                    raise BenchError(f"storescp is not running:\n{scp.log()[-3000:]}")

            def answers() -> bool:
                alive()
                done = echoscu(node.port, aec=NODE_AET, aet=SENDER_AET, nodelay=True, timeout=15, check=False)
                return done.returncode == 0

            try:
                wait_for(answers, timeout=60, interval=0.1, what="pacs-node serve to answer C-ECHO")
            except TimeoutError as error:
                raise BenchError(f"{error}:\n{tail(node.log_path)}") from None
            assert node.proc is not None
            cpu_before = cpu_seconds(node.proc.pid)

            began = time.time()
            storescu(folder, node.port, aet=SENDER_AET, aec=NODE_AET, nodelay=True, timeout=600)
            sent = time.time()

            def all_there() -> float | None:
                alive()
                return time.time() if len(os.listdir(scp.out_dir)) >= files else None

            try:
                complete = wait_for(all_there, timeout=args.timeout, interval=POLL_S, what="storescp to hold all")
            except TimeoutError:
                states = sorted({s for _, s, _, _ in send_jobs(node.data_dir)})
                raise BenchError(
                    f"storescp holds {len(scp.files())} of {files} files {args.timeout:g} s after the send "
                    f"(send job states: {states}):\n{tail(node.log_path)}"
                ) from None
            assert complete is not None

            def settled() -> bool:
                alive()
                jobs = send_jobs(node.data_dir)
                return len(jobs) >= files and all(state == "done" for _, state, _, _ in jobs)

            with contextlib.suppress(TimeoutError):  # whatever is not done is reported below
                wait_for(settled, timeout=30, interval=0.05, what="every send job to be done")
            node_cpu = cpu_seconds(node.proc.pid) - cpu_before
            code = node.stop()
            if code != 0:
                raise BenchError(f"pacs-node serve exited with status {code} after SIGTERM:\n{tail(node.log_path)}")
        finally:
            node.kill()
        check_received(scp, expected, "through the node")

    received = dict(read_db(node.data_dir / "index.sqlite3", "SELECT sop_instance_uid, received_at FROM instances"))
    if received.keys() != expected.keys():
        raise BenchError(f"the node indexed {len(received)} instances, expected exactly the {files} sent")
    jobs = send_jobs(node.data_dir)
    not_done = [(sop, state) for sop, state, _, _ in jobs if state != "done"]
    if not_done:
        raise BenchError(f"{len(not_done)} send jobs are not done, e.g. {not_done[:3]}:\n{tail(node.log_path)}")
    success: dict[str, float] = {}
    for sop, _, _, updated in jobs:
        if sop in success:
            raise BenchError(f"two done send jobs for one instance ({sop}): it was forwarded twice")
        success[sop] = updated
    if success.keys() != expected.keys():
        raise BenchError(f"{len(success)} done send jobs, expected one for each of the {files} instances")
    latencies = [success[sop] - float(received[sop]) for sop in expected]
    return Through(
        receive_s=sent - began,
        e2e_s=complete - began,
        latencies=latencies,
        first_forward_s=min(success.values()) - began,
        node_cpu_s=node_cpu,
        retried=sum(1 for _, _, attempts, _ in jobs if attempts > 1),
    )


def one_rep(rep: int, folder: Path, expected: dict[str, str], tmp: Path, args: argparse.Namespace) -> Run:
    order = ("direct", "node") if rep % 2 == 0 else ("node", "direct")
    direct_s = 0.0
    node: Through | None = None
    for which in order:
        workdir = tmp / f"{rep}-{which}"
        if which == "direct":
            direct_s = direct(folder, expected, workdir)
        else:
            node = through_node(folder, expected, workdir, args)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    assert node is not None
    files = len(expected)
    ms = [1000 * v for v in node.latencies]
    return Run(
        rep=rep,
        order=",".join(order),
        files=files,
        direct_s=direct_s,
        direct_per_s=files / direct_s,
        receive_s=node.receive_s,
        receive_per_s=files / node.receive_s,
        e2e_s=node.e2e_s,
        e2e_per_s=files / node.e2e_s,
        latency_p50_ms=percentile(ms, 50),
        latency_p95_ms=percentile(ms, 95),
        latency_max_ms=max(ms),
        first_forward_s=node.first_forward_s,
        node_cpu_s=node.node_cpu_s,
        retried=node.retried,
    )


# -- report ---------------------------------------------------------------------------------------------

COLUMNS = (
    ("direct_per_s", "direct/s", "{:9.1f}"),
    ("receive_per_s", "recv/s", "{:9.1f}"),
    ("e2e_per_s", "e2e/s", "{:9.1f}"),
    ("direct_s", "direct s", "{:9.2f}"),
    ("receive_s", "recv s", "{:9.2f}"),
    ("e2e_s", "e2e s", "{:9.2f}"),
    ("latency_p50_ms", "p50 ms", "{:9.0f}"),
    ("latency_p95_ms", "p95 ms", "{:9.0f}"),
    ("latency_max_ms", "max ms", "{:9.0f}"),
    ("first_forward_s", "1st fwd s", "{:9.2f}"),
    ("node_cpu_s", "node CPU", "{:9.2f}"),
    ("retried", "retried", "{:9.0f}"),
)


def line(label: str, values: dict[str, Any], order: str) -> str:
    return f"  {label:6s} {order:11s} " + " ".join(fmt.format(values[key]) for key, _, fmt in COLUMNS)


def report(runs: list[Run]) -> dict[str, float]:
    print(f"  {'run':6s} {'order':11s} " + " ".join(f"{head:>9s}" for _, head, _ in COLUMNS))
    for run in runs:
        print(line(str(run.rep + 1), asdict(run), run.order))
    medians = {key: float(statistics.median(getattr(r, key) for r in runs)) for key, _, _ in COLUMNS}
    print(line("median", medians, ""))
    ratio = medians["e2e_per_s"] / medians["direct_per_s"]
    receive_ratio = medians["receive_per_s"] / medians["direct_per_s"]
    print(
        f"\nnode end-to-end / direct: {ratio:.2f} x instances/s "
        f"({medians['e2e_per_s']:.1f} vs {medians['direct_per_s']:.1f}); "
        f"node receive / direct: {receive_ratio:.2f} x"
    )
    print(
        f"latency received -> peer success under that load, median over runs: p50 {medians['latency_p50_ms']:.0f} ms, "
        f"p95 {medians['latency_p95_ms']:.0f} ms"
    )
    return medians | {"e2e_vs_direct": ratio, "receive_vs_direct": receive_ratio}


# -- main -----------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--repeat", type=int, default=5, help="repetitions, each one direct and one node run (default 5)"
    )
    parser.add_argument("--slices", type=int, default=300, help="instances in the series (default 300)")
    parser.add_argument("--seed", type=int, default=3, help="phantom seed (default 3)")
    parser.add_argument(
        "--associations", type=int, default=2, help="the node's sender.associations_per_peer, 1..16 (default 2)"
    )
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds after the send for storescp to hold all (default 120)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders (series, received data, logs)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    if args.repeat < 1 or args.slices < 1 or not 1 <= args.associations <= 16 or args.timeout <= 0:
        parser.error("--repeat and --slices must be >= 1, --associations 1..16, --timeout > 0")
    return args


def main() -> int:
    args = parse_args()
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        say(f"error: missing {', '.join(missing)} (Debian package dcmtk)")
        return 2
    began = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-route-"))
    finished = False
    runs: list[Run] = []
    try:
        say(f"writing a {args.slices}-slice phantom CT series (seed {args.seed}) into {tmp / 'ct'} ...")
        files = write_series(tmp / "ct", args.slices, args.seed)
        mb = sum(p.stat().st_size for p in files) / 1e6
        expected = pixel_digests(files)
        if len(expected) != len(files):
            raise BenchError(f"the series has {len(expected)} distinct SOP Instance UIDs in {len(files)} files")
        for rep in range(args.repeat):
            run = one_rep(rep, tmp / "ct", expected, tmp, args)
            runs.append(run)
            say(
                f"[{rep + 1}/{args.repeat}] ({run.order}) direct {run.direct_s:.2f} s {run.direct_per_s:.0f}/s; node: "
                f"receive {run.receive_s:.2f} s {run.receive_per_s:.0f}/s, end-to-end {run.e2e_s:.2f} s "
                f"{run.e2e_per_s:.0f}/s, latency p50 {run.latency_p50_ms:.0f} ms p95 {run.latency_p95_ms:.0f} ms"
                + (f", {run.retried} sends retried" if run.retried else "")
            )
        elapsed = time.perf_counter() - began
        finished = True
    except (BenchError, PeerError) as error:
        say(f"FAILED: {error}")
        return 1
    finally:
        if finished and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif not finished:
            say(f"temporary folder kept for inspection: {tmp}")

    info = versions()
    print(
        f"instance-level forwarding of a {len(files)}-slice CT series ({mb:.0f} MB) by storescu (TCP_NODELAY=1, one "
        f"association) over 127.0.0.1: directly to storescp, and through pacs-node serve to storescp"
    )
    print(f"{info['storescu']}; Python {info['python']}; {info['cpus']} CPUs; commit {info['commit']}")
    print(
        f'node: one instance-level rule forward = ["{PEER}"], workers count 0, associations_per_peer '
        f"{args.associations}; storescp +xa, TCP_NODELAY=1, one association at a time; fresh node and storescp "
        f"each run; instances/s, seconds, latency received -> peer success; {args.repeat} runs\n"
    )
    summary = report(runs)
    command = (
        f".venv/bin/python bench/route.py --repeat {args.repeat} --slices {args.slices} --seed {args.seed} "
        f"--associations {args.associations}"
    )
    print(f"\ntook {elapsed:.0f} s; reproduce with: {command}")
    if args.keep:
        print(f"temporary folders kept in {tmp}")
    if args.json:
        payload = {
            "command": command,
            "versions": info,
            "files": len(files),
            "mb": mb,
            "elapsed_s": elapsed,
            "summary": summary,
            "runs": [asdict(r) for r in runs],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
