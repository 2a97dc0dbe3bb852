"""Benchmark instance-level forwarding: storescu -> node -> storescp, beside direct and Orthanc's auto-routing.

    .venv/bin/python bench/route.py [--repeat 5] [--slices 300] [--associations 2] [--targets 1|2]
                                    [--no-orthanc] [--json FILE] [--keep]

Writes a phantom CT series once (``pacs-node synth ct --seed 3``: 512x512 int16 slices, about 512 KiB a
file; bench/ingest.py's generator) and, per repetition, sends it with DCMTK ``storescu`` (one association,
TCP_NODELAY=1) three ways, each of them first in turn:

  direct  storescu -> DCMTK storescp (``+xa``: every transfer syntax; TCP_NODELAY=1; writes each file
          before it answers, never fsyncs, serves one association at a time): the ceiling
  node    storescu -> ``pacs-node serve`` -> storescp(s) (the same kind, fresh ones). The node: workers
          count 0, no [analysis], one rule ``level = "instance"``, ``when = Modality equals CT``,
          ``forward = ["scp"]`` (``["scp", "scp2"]`` with ``--targets 2``), so every instance is queued as
          a ``send:<peer>`` job as it is indexed, while the rest of the series still arrives;
          ``sender.associations_per_peer = --associations``; other settings at their defaults
  orthanc storescu -> Orthanc (plugins off, fsync on, SQLite index, TCP_NODELAY=1) whose Lua
          ``OnStoredInstance`` calls ``SendToModality`` for each target -> storescp(s): the auto-routing
          that sites already have (issue 16's comparison; ``--no-orthanc`` leaves it out)

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
from tests.peers import Orthanc, PeerError, StoreSCP, echoscu, storescu, wait_for

NODE_AET = "PACSNODE"
SENDER_AET = "STORESCU"
SCP_AET = "STORESCP"
PEERS = ("scp", "scp2")  # the forwarding targets: --targets of them (fan-out with 2)
TOOLS = ("storescu", "storescp", "echoscu", "Orthanc")
# Orthanc's own auto-routing: a Lua hook forwards every stored instance to each modality, as sites do.
ROUTE_LUA = """
function OnStoredInstance(instanceId, tags, metadata, origin)
{sends}
end
"""
# issue 16's targets: node end to end / Orthanc auto-routing, by number of targets; latency p95.
TARGET_VS_ORTHANC = {1: 1.2, 2: 1.0}
TARGET_P95_MS = 300.0
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
    orthanc_s: float = 0.0  # storescu -> Orthanc (Lua auto-routing) -> every storescp holds all
    orthanc_per_s: float = 0.0


def node_config(scps: list[StoreSCP], associations: int) -> str:
    """Everything but ``[node]`` (NodeProcess writes that): one rule forwarding to every storescp."""
    peers = "".join(
        f'[[peers]]\nname = "{name}"\nae_title = "{scp.aet}"\nhost = "127.0.0.1"\nport = {scp.port}\n\n'
        for name, scp in zip(PEERS, scps, strict=False)
    )
    forward = ", ".join(f'"{name}"' for name in PEERS[: len(scps)])
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

{peers}[[rules]]
name = "ct-to-scp"
level = "instance"
when = {{ attribute = "Modality", equals = "CT" }}
forward = [{forward}]
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
    """(peer/SOP Instance UID, state, attempts, updated) of every send job; none before the job store exists."""
    path = data_dir / "jobs.sqlite3"
    if not path.exists():
        return []
    rows = read_db(path, "SELECT kind, payload, state, attempts, updated FROM jobs WHERE kind LIKE 'send:%'")
    out = []
    kinds = {f"send:{name}" for name in PEERS}
    for kind, payload, state, attempts, updated in rows:
        if kind not in kinds:
            raise BenchError(f"a send job of kind {kind!r}: only {sorted(kinds)} were expected")
        key = f"{kind[5:]}/{json.loads(payload)['sop']}"
        out.append((key, str(state), int(attempts), float(updated)))
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


def storescps(stack: contextlib.ExitStack, workdir: Path, targets: int) -> list[StoreSCP]:
    """``targets`` fresh storescps (AE titles STORESCP, STORESCP2), stopped with ``stack``."""
    return [
        stack.enter_context(
            StoreSCP(
                workdir / f"received{k or ''}",
                transfer_syntaxes="all",
                aet=f"{SCP_AET}{k + 1 if k else ''}",
                nodelay=True,
            )
        )
        for k in range(targets)
    ]


def through_orthanc(folder: Path, expected: dict[str, str], workdir: Path, targets: int) -> tuple[float, float]:
    """storescu -> a fresh Orthanc whose Lua hook forwards each stored instance -> fresh storescps.

    Orthanc as the issue measured it: plugins off, its default fsync of every file, SQLite index,
    TCP_NODELAY=1, ``SendToModality`` once per target in ``OnStoredInstance``. Returns (seconds until
    storescu exits, seconds until every storescp holds every instance).
    """
    files = len(expected)
    with contextlib.ExitStack() as stack:
        scps = storescps(stack, workdir, targets)
        script = workdir / "route.lua"
        workdir.mkdir(parents=True, exist_ok=True)
        sends = "\n".join(f"  SendToModality(instanceId, '{name}')" for name in PEERS[:targets])
        script.write_text(ROUTE_LUA.format(sends=sends), encoding="utf-8")
        modalities = {name: [scp.aet, "127.0.0.1", scp.port] for name, scp in zip(PEERS, scps, strict=False)}
        config = {"LuaScripts": [str(script)], "DicomModalities": modalities}
        pacs = stack.enter_context(Orthanc(workdir / "orthanc", config=config, nodelay=True, graceful_exit=False))
        began = time.perf_counter()
        storescu(folder, pacs.dicom_port, aet=SENDER_AET, aec=pacs.aet, nodelay=True, timeout=600)
        received = time.perf_counter() - began

        def all_there() -> float | None:
            return time.perf_counter() if all(len(os.listdir(scp.out_dir)) >= files for scp in scps) else None

        try:
            complete = wait_for(all_there, timeout=300, interval=POLL_S, what="Orthanc's routing to finish")
        except TimeoutError:
            raise BenchError(f"Orthanc routed {[len(scp.files()) for scp in scps]} of {files}") from None
        assert complete is not None
        for scp in scps:
            check_received(scp, expected, "through Orthanc")
    return received, complete - began


def through_node(folder: Path, expected: dict[str, str], workdir: Path, args: argparse.Namespace) -> Through:
    """storescu -> a fresh node -> fresh storescps; timings and per-instance latencies."""
    files = len(expected)
    with contextlib.ExitStack() as stack:
        scps = storescps(stack, workdir, args.targets)
        scp = scps[0]
        node = NodeProcess(workdir / "node", node_config(scps, args.associations), ae_title=NODE_AET)
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

            def ready() -> bool:
                # The sender is its own process and takes about a second to import: a node in service has
                # it running, so the clock starts once it is (and every receiver process listens).
                alive()
                return "sending to scp" in node.log_path.read_text(errors="replace")

            try:
                wait_for(answers, timeout=60, interval=0.1, what="pacs-node serve to answer C-ECHO")
                wait_for(ready, timeout=60, interval=0.05, what="pacs-node's sender to start")
                time.sleep(0.5)  # the receiver processes bind after they import, as the sender does
            except TimeoutError as error:
                raise BenchError(f"{error}:\n{tail(node.log_path)}") from None
            assert node.proc is not None
            cpu_before = cpu_seconds(node.proc.pid)

            began = time.time()
            storescu(folder, node.port, aet=SENDER_AET, aec=NODE_AET, nodelay=True, timeout=600)
            sent = time.time()

            def all_there() -> float | None:
                alive()
                return time.time() if all(len(os.listdir(s.out_dir)) >= files for s in scps) else None

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
                return len(jobs) >= files * len(scps) and all(state == "done" for _, state, _, _ in jobs)

            with contextlib.suppress(TimeoutError):  # whatever is not done is reported below
                wait_for(settled, timeout=30, interval=0.05, what="every send job to be done")
            node_cpu = cpu_seconds(node.proc.pid) - cpu_before
            code = node.stop()
            if code != 0:
                raise BenchError(f"pacs-node serve exited with status {code} after SIGTERM:\n{tail(node.log_path)}")
        finally:
            node.kill()
        for each in scps:
            check_received(each, expected, "through the node")

    received = dict(read_db(node.data_dir / "index.sqlite3", "SELECT sop_instance_uid, received_at FROM instances"))
    if received.keys() != expected.keys():
        raise BenchError(f"the node indexed {len(received)} instances, expected exactly the {files} sent")
    jobs = send_jobs(node.data_dir)
    not_done = [(sop, state) for sop, state, _, _ in jobs if state != "done"]
    if not_done:
        raise BenchError(f"{len(not_done)} send jobs are not done, e.g. {not_done[:3]}:\n{tail(node.log_path)}")
    success: dict[str, float] = {}
    for key, _, _, updated in jobs:
        if key in success:
            raise BenchError(f"two done send jobs for one instance and peer ({key}): it was forwarded twice")
        success[key] = updated
    wanted = {f"{name}/{sop}" for name in PEERS[: args.targets] for sop in expected}
    if success.keys() != wanted:
        raise BenchError(f"{len(success)} done send jobs, expected one for each of the {len(wanted)} (peer, instance)")
    latencies = [success[key] - float(received[key.split("/", 1)[1]]) for key in wanted]
    return Through(
        receive_s=sent - began,
        e2e_s=complete - began,
        latencies=latencies,
        first_forward_s=min(success.values()) - began,
        node_cpu_s=node_cpu,
        retried=sum(1 for _, _, attempts, _ in jobs if attempts > 1),
    )


def one_rep(rep: int, folder: Path, expected: dict[str, str], tmp: Path, args: argparse.Namespace) -> Run:
    names = ["direct", "node", *(["orthanc"] if args.orthanc else [])]
    order = names[rep % len(names) :] + names[: rep % len(names)]  # each first in turn
    direct_s = orthanc_s = 0.0
    node: Through | None = None
    for which in order:
        workdir = tmp / f"{rep}-{which}"
        if which == "direct":
            direct_s = direct(folder, expected, workdir)
        elif which == "orthanc":
            orthanc_s = through_orthanc(folder, expected, workdir, args.targets)[1]
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
        orthanc_s=orthanc_s,
        orthanc_per_s=files / orthanc_s if orthanc_s else 0.0,
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
    ("orthanc_per_s", "orthanc/s", "{:9.1f}"),
)


def line(label: str, values: dict[str, Any], order: str) -> str:
    return f"  {label:6s} {order:19s} " + " ".join(fmt.format(values[key]) for key, _, fmt in COLUMNS)


def report(runs: list[Run], targets: int) -> dict[str, float]:
    print(f"  {'run':6s} {'order':19s} " + " ".join(f"{head:>9s}" for _, head, _ in COLUMNS))
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
    out = medians | {"e2e_vs_direct": ratio, "receive_vs_direct": receive_ratio}
    if medians["orthanc_per_s"]:
        vs = medians["e2e_per_s"] / medians["orthanc_per_s"]
        goal = TARGET_VS_ORTHANC[targets]
        out["e2e_vs_orthanc"] = vs
        print(
            f"node end-to-end / Orthanc auto-routing: {vs:.2f} x ({medians['e2e_per_s']:.1f} vs "
            f"{medians['orthanc_per_s']:.1f}/s); target >= {goal:g} x with {targets} target(s): "
            f"{'met' if vs >= goal else 'NOT met'}"
        )
    p95_ok = medians["latency_p95_ms"] <= TARGET_P95_MS
    print(
        f"target: latency p95 <= {TARGET_P95_MS:g} ms: {'met' if p95_ok else 'NOT met'}; "
        f"retried sends: {medians['retried']:.0f}"
    )
    return out


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
    parser.add_argument("--targets", type=int, default=1, help="forwarding targets, 1 or 2 (fan-out; default 1)")
    parser.add_argument(
        "--no-orthanc", dest="orthanc", action="store_false", help="leave out the Orthanc auto-routing row"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders (series, received data, logs)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    if args.repeat < 1 or args.slices < 1 or not 1 <= args.associations <= 16 or args.timeout <= 0:
        parser.error("--repeat and --slices must be >= 1, --associations 1..16, --timeout > 0")
    if args.targets not in (1, 2):
        parser.error("--targets: 1 or 2")
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
        f"node: one instance-level rule forwarding to {args.targets} storescp(s), workers count 0, "
        f"associations_per_peer {args.associations}; storescp +xa, TCP_NODELAY=1, one association at a time; "
        f"Orthanc (Lua OnStoredInstance -> SendToModality per target, fsync on); fresh node, Orthanc and "
        f"storescps each run; instances/s, seconds, latency received -> peer success; {args.repeat} runs\n"
    )
    summary = report(runs, args.targets)
    command = (
        f".venv/bin/python bench/route.py --repeat {args.repeat} --slices {args.slices} --seed {args.seed} "
        f"--associations {args.associations} --targets {args.targets}" + ("" if args.orthanc else " --no-orthanc")
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
