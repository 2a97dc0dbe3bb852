"""Benchmark C-STORE ingest: one CT series sent by DCMTK storescu to storescp, Orthanc and our node.

    .venv/bin/python bench/ingest.py [--repeat 5] [--slices 300] [--modes a,b,c] [--json FILE] [--keep]

Writes a phantom CT series once (``pacs-node synth ct --seed 3``: 512x512 int16 slices, about 512 KiB a
file) and sends it with DCMTK ``storescu`` to four receivers on 127.0.0.1:

  storescp  DCMTK storescp (``+xa -od DIR``: every transfer syntax, writes each file; it never fsyncs,
            and it serves one association at a time)
  orthanc   Orthanc with its own JSON config (tests/peers.py), no plugins, fsync of every file on (its
            default SyncStorageArea), SQLite index
  node      ``pacs-node serve`` with workers count 0 and no models, so only the receive path runs
            (spool file, index row, one group-committed sync of the receive journal per instance); its
            default ``[receive] processes`` (one per core, at most 4), every one listening before the
            clock starts; CPU is summed and peak RSS is the largest over those processes
  discard   bench/discard_scp.py: pynetdicom as the node's receiver was set up before it had its own
            acceptor, answering Success to every C-STORE and storing nothing: the ceiling for a
            pynetdicom receiver (the node no longer is one, and may pass it)

Modes, one table each:
  a  TCP_NODELAY=1 in the environment of storescu, storescp and Orthanc (all three use DCMTK's network
     layer, which leaves Nagle's algorithm on without it); one association
  b  TCP_NODELAY nowhere: the usual scanner and the stock storescp / Orthanc; one association. Our node
     sets TCP_NODELAY on its own sockets in every mode, it reads no environment variable for it
  c  as a, but --senders (4) storescu processes at once, each sending its own quarter of the series
     (distinct SOP Instance UIDs, hard links in sub-folders), so every receiver stores --slices instances

Fairness: every run starts a fresh receiver process on empty storage (a new temporary folder), for all
three alike, so none is answering duplicates (Orthanc skips storing a known instance; the node keeps the
first copy) and each peak RSS belongs to one run. Start-up is not timed. The order of the receivers
rotates with each repetition. Timed: from starting the first storescu to the exit of the last, as
instances/s = files / wall time. After each run the receiver must hold every instance (storescp: files in
its folder; Orthanc: REST /instances; node: rows in index.sqlite3), else the benchmark fails. Peak RSS is
VmHWM of the receiver process (/proc/PID/status) read after the last storescu exited; the node is then
stopped with SIGTERM and must exit with status 0. Figures are medians over --repeat runs; RSS is the
largest of the runs. CPU s is the receiver's user + system CPU time during the send (/proc/PID/stat;
the machine's cores limit it to cores x wall time), which tells a CPU-bound receiver from one that waits.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults import listening, role_pids
from tests.peers import Orthanc, PeerError, StoreSCP, echoscu, free_port, storescu, wait_for

ROOT = Path(__file__).resolve().parents[1]
RECEIVERS = ("storescp", "orthanc", "node", "discard")
MODES = {
    "a": "TCP_NODELAY=1 (sender, storescp, Orthanc), one association",
    "b": "no TCP_NODELAY anywhere (untuned sender, stock storescp / Orthanc), one association",
    "c": "TCP_NODELAY=1, {senders} concurrent storescu processes, {per} distinct files each "
    "(storescp takes their associations one after another)",
}
NODE_AET = "PACSNODE"
SENDER_AET = "STORESCU"
PACS_NODE = ROOT / ".venv" / "bin" / "pacs-node"
TOOLS = ("storescu", "storescp", "echoscu", "Orthanc")
# Targets printed beside the figures (not asserted): issue 14's.
TARGET_VS_ORTHANC = {"a": 1.2, "b": 1.5, "c": 1.0}
TARGET_VS_CEILING = 0.75
TARGET_RSS_MB = 150.0


class BenchError(RuntimeError):
    """A receiver lost instances, did not start, or did not stop cleanly: its figure would be invalid."""


@dataclass
class Run:
    """One timed send to one receiver."""

    mode: str
    receiver: str
    rep: int
    files: int
    wall_s: float
    per_s: float
    rss_mb: float
    cpu_s: float
    start_s: float


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def env(nodelay: bool) -> dict[str, str]:
    out = dict(os.environ)
    if nodelay:
        out["TCP_NODELAY"] = "1"
    else:
        out.pop("TCP_NODELAY", None)
    return out


def receiving(pid: int) -> list[int]:
    """``pid`` and its ``pacs-node receiver`` children (the node's other receiver processes)."""
    return [pid, *role_pids(pid, "receiver")]


def peak_rss_mb(pid: int) -> float:
    """The largest VmHWM (peak resident set) of ``pid`` and its receiver children, in MB (MiB, like
    bench/analyse.py): the target is per receiver process."""
    peaks = []
    for one in receiving(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{one}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peaks.append(int(line.split()[1]) / 1024)
    if not peaks:
        raise BenchError(f"no VmHWM in /proc/{pid}/status")
    return max(peaks)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time ``pid`` and its receiver children have used so far (/proc/PID/stat), in s."""
    total = 0.0
    for one in receiving(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


# -- the series -----------------------------------------------------------------------------------------


def write_series(out: Path, slices: int, seed: int) -> list[Path]:
    """``pacs-node synth ct`` into ``out``; returns the DICOM files, sorted."""
    command = [str(PACS_NODE), "synth", "ct", "--out", str(out), "--slices", str(slices), "--seed", str(seed)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        # The CLI imports every command; while one of them is broken, render the same series directly
        # (synth ct is make_phantom(seed, slices) + write_dicom, 512x512, nodules chosen by the seed).
        say(f"warning: pacs-node synth ct exited with status {done.returncode}; using node.synth.phantom directly")
        shutil.rmtree(out, ignore_errors=True)
        script = (
            "import sys; from pathlib import Path; from node.synth.phantom import make_phantom; "
            "make_phantom(int(sys.argv[2]), slices=int(sys.argv[3])).write_dicom(Path(sys.argv[1]))"
        )
        subprocess.run([sys.executable, "-c", script, str(out), str(seed), str(slices)], check=True, cwd=ROOT)
    files = sorted(p for p in out.iterdir() if p.is_file())
    if len(files) != slices:
        raise BenchError(f"synth wrote {len(files)} files, expected {slices}")
    return files


def split_series(files: list[Path], parts: int, into: Path) -> list[Path]:
    """Hard-link ``files`` into ``parts`` sub-folders of consecutive slices (sizes differ by at most one)."""
    folders = []
    start = 0
    for k in range(parts):
        size = len(files) // parts + (1 if k < len(files) % parts else 0)
        folder = into / f"part{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for path in files[start : start + size]:
            target = folder / path.name
            if not target.exists():
                try:
                    os.link(path, target)
                except OSError:
                    shutil.copy2(path, target)
        folders.append(folder)
        start += size
    return folders


# -- receivers ------------------------------------------------------------------------------------------


@dataclass
class Receiver:
    """A started receiver: where to send, how to count what it stored, and its process id."""

    port: int
    aec: str
    pid: int
    count: Callable[[], int]
    start_s: float


@contextlib.contextmanager
def run_storescp(workdir: Path, nodelay: bool) -> Iterator[Receiver]:
    began = time.perf_counter()
    with StoreSCP(workdir / "received", transfer_syntaxes="all", nodelay=nodelay) as scp:
        started = time.perf_counter() - began
        assert scp.pid is not None
        yield Receiver(scp.port, "STORESCP", scp.pid, lambda: len(scp.files()), started)


@contextlib.contextmanager
def run_orthanc(workdir: Path, nodelay: bool) -> Iterator[Receiver]:
    began = time.perf_counter()
    # SIGKILL at the end (instant): the run's storage is thrown away (or kept with --keep; fsync'd anyway).
    with Orthanc(workdir / "orthanc", nodelay=nodelay, graceful_exit=False) as pacs:
        started = time.perf_counter() - began
        assert pacs.pid is not None
        yield Receiver(pacs.dicom_port, pacs.aet, pacs.pid, lambda: len(pacs.instances()), started)


NODE_CONFIG = """\
[node]
ae_title = "{aet}"
bind = "127.0.0.1"
port = {port}
data_dir = "{data_dir}"

[limits]
min_free_disk_mb = 0

[workers]
count = 0

[analysis]
models = []

[[peers]]
name = "scanner"
ae_title = "{sender}"
allow_store = true
"""


def node_index_count(data_dir: Path) -> int:
    path = data_dir / "index.sqlite3"
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)) as db:
        return int(db.execute("SELECT COUNT(*) FROM instances").fetchone()[0])


@contextlib.contextmanager
def run_node(workdir: Path, nodelay: bool) -> Iterator[Receiver]:
    """``pacs-node serve`` on a fresh data_dir; SIGTERM at the end, which must exit with status 0."""
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = workdir / "data"
    port = free_port()
    config = workdir / "node.toml"
    config.write_text(NODE_CONFIG.format(aet=NODE_AET, port=port, data_dir=data_dir, sender=SENDER_AET))
    log_path = workdir / "serve.log"
    began = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(PACS_NODE), "serve", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env(nodelay),
            cwd=workdir,
        )
    try:

        def answers() -> bool:
            if process.poll() is not None:
                raise BenchError(f"pacs-node serve exited with status {process.returncode}:\n{tail(log_path)}")
            done = echoscu(port, aec=NODE_AET, aet=SENDER_AET, nodelay=True, timeout=15, check=False)
            return done.returncode == 0

        def all_listen() -> bool:  # every receiver process ([receive] processes, default one per core)
            return listening(port) >= min(os.cpu_count() or 1, 4)

        try:
            wait_for(answers, timeout=60, interval=0.1, what="pacs-node serve to answer C-ECHO")
            wait_for(all_listen, timeout=60, interval=0.05, what="every pacs-node receiver process to listen")
        except TimeoutError as error:
            raise BenchError(f"{error}:\n{tail(log_path)}") from None
        started = time.perf_counter() - began
        yield Receiver(port, NODE_AET, process.pid, lambda: node_index_count(data_dir), started)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
                raise BenchError(f"pacs-node serve did not exit 60 s after SIGTERM:\n{tail(log_path)}") from None
    if process.returncode != 0:
        raise BenchError(f"pacs-node serve exited with status {process.returncode} after SIGTERM:\n{tail(log_path)}")


@contextlib.contextmanager
def run_discard(workdir: Path, nodelay: bool) -> Iterator[Receiver]:
    """bench/discard_scp.py: pynetdicom with the node's settings, storing nothing (the ceiling)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port, counter = free_port(), workdir / "count"
    log_path = workdir / "discard.log"
    began = time.perf_counter()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "discard_scp.py"), str(port), str(counter)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:

        def answers() -> bool:
            if process.poll() is not None:
                raise BenchError(f"discard_scp exited with status {process.returncode}:\n{tail(log_path)}")
            return echoscu(port, aec="DISCARD", aet=SENDER_AET, nodelay=True, timeout=15, check=False).returncode == 0

        wait_for(answers, timeout=60, interval=0.1, what="discard_scp to answer C-ECHO")
        counter.unlink(missing_ok=True)  # the echo's association wrote 0
        started = time.perf_counter() - began

        def count() -> int:
            # Written when each association closes: wait a moment for the last one.
            wait_for(lambda: counter.exists(), timeout=10, interval=0.05, what="discard_scp's count")
            return int(counter.read_text() or 0)

        yield Receiver(port, "DISCARD", process.pid, count, started)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


STARTERS = {"storescp": run_storescp, "orthanc": run_orthanc, "node": run_node, "discard": run_discard}


# -- one run --------------------------------------------------------------------------------------------


def send(folders: list[Path], receiver: Receiver, nodelay: bool) -> float:
    """storescu per folder, all at once; seconds from the first start to the last exit."""

    def one(folder: Path) -> None:
        storescu(folder, receiver.port, aet=SENDER_AET, aec=receiver.aec, nodelay=nodelay, timeout=600)

    began = time.perf_counter()
    if len(folders) == 1:
        one(folders[0])
    else:
        with ThreadPoolExecutor(len(folders)) as pool:
            list(pool.map(one, folders))  # re-raises a storescu failure
    return time.perf_counter() - began


def one_run(mode: str, name: str, rep: int, folders: list[Path], files: int, workdir: Path) -> Run:
    nodelay = mode != "b"
    with STARTERS[name](workdir, nodelay) as receiver:
        cpu_before = cpu_seconds(receiver.pid)
        wall = send(folders, receiver, nodelay)
        cpu = cpu_seconds(receiver.pid) - cpu_before
        rss = peak_rss_mb(receiver.pid)
        stored = receiver.count()
        if stored != files:
            raise BenchError(f"{name} holds {stored} instances after the run, expected {files}: figure invalid")
    return Run(mode, name, rep, files, wall, files / wall, rss, cpu, receiver.start_s)


# -- report ---------------------------------------------------------------------------------------------


def summarise(runs: list[Run], mb_per_file: float) -> dict[str, dict[str, float]]:
    out = {}
    for name in RECEIVERS:
        mine = [r for r in runs if r.receiver == name]
        if mine:
            out[name] = {
                "median_wall_s": statistics.median(r.wall_s for r in mine),
                "median_per_s": statistics.median(r.per_s for r in mine),
                "min_per_s": min(r.per_s for r in mine),
                "max_per_s": max(r.per_s for r in mine),
                "mb_per_s": statistics.median(r.per_s for r in mine) * mb_per_file,
                "peak_rss_mb": max(r.rss_mb for r in mine),
                "median_cpu_s": statistics.median(r.cpu_s for r in mine),
                "median_start_s": statistics.median(r.start_s for r in mine),
                "runs": len(mine),
            }
    return out


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(mode: str, title: str, summary: dict[str, dict[str, float]], files: int, repeat: int) -> dict[str, Any]:
    """Print one mode's table, ratios and targets; return the ratios and target verdicts."""
    print(f"\nmode {mode}: {title}; {files} instances per run, median of {repeat}")
    print(
        f"  {'receiver':9s} {'wall s':>8s} {'inst/s':>8s} {'min-max inst/s':>16s} {'MB/s':>7s} "
        f"{'peak RSS MB':>12s} {'CPU s':>6s}"
    )
    for name, s in summary.items():
        span = f"{s['min_per_s']:.0f}-{s['max_per_s']:.0f}"
        print(
            f"  {name:9s} {s['median_wall_s']:8.2f} {s['median_per_s']:8.1f} {span:>16s} "
            f"{s['mb_per_s']:7.1f} {s['peak_rss_mb']:12.0f} {s['median_cpu_s']:6.2f}"
        )
    node = summary.get("node")
    if node is None:
        print("  (node not measured: no ratios or targets)")
        return {}
    ratios: dict[str, float] = {}
    for other in ("orthanc", "storescp", "discard"):
        if other in summary:
            ratios[other] = node["median_per_s"] / summary[other]["median_per_s"]
            print(f"  node / {other:8s} {ratios[other]:5.2f} x instances/s")
    targets: dict[str, bool] = {}
    if "orthanc" in summary:
        goal = TARGET_VS_ORTHANC[mode]
        targets["vs_orthanc"] = ratios["orthanc"] >= goal
        print(
            f"  target: node >= {goal:g} x Orthanc's instances/s: "
            f"{met(targets['vs_orthanc'])} ({ratios['orthanc']:.2f} x)"
        )
    if "discard" in summary:
        targets["vs_ceiling"] = ratios["discard"] >= TARGET_VS_CEILING
        print(
            f"  target: node >= {TARGET_VS_CEILING:g} x pynetdicom receive-and-discard (the ceiling): "
            f"{met(targets['vs_ceiling'])} ({ratios['discard']:.2f} x)"
        )
    if mode == "b":
        print("  (storescp and Orthanc run into Nagle + delayed ACK here; the node sets TCP_NODELAY itself)")
    if mode == "b" and "storescp" in summary:
        targets["untuned_sender_vs_storescp"] = ratios["storescp"] >= 1.0
        print(
            f"  target: untuned sender, node >= storescp: {met(targets['untuned_sender_vs_storescp'])} "
            f"({ratios['storescp']:.2f} x)"
        )
    targets["rss"] = node["peak_rss_mb"] <= TARGET_RSS_MB
    print(f"  target: node peak RSS <= {TARGET_RSS_MB:g} MB: {met(targets['rss'])} ({node['peak_rss_mb']:.0f} MB)")
    return {"node_vs": ratios, "targets": targets}


def versions() -> dict[str, str]:
    def first_line(command: list[str]) -> str:
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False).stdout
        except OSError:
            return "?"
        return next((line.strip() for line in out.splitlines() if line.strip()), "?")

    commit = first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = first_line(["git", "-C", str(ROOT), "status", "--porcelain"])
    return {
        "storescu": first_line(["storescu", "--version"]),
        "orthanc": first_line(["Orthanc", "--version"]),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "commit": commit + (" (uncommitted changes)" if dirty != "?" else ""),
    }


# -- main -----------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5, help="runs per receiver and mode (default 5)")
    parser.add_argument("--slices", type=int, default=300, help="instances in the series (default 300)")
    parser.add_argument("--seed", type=int, default=3, help="phantom seed (default 3)")
    parser.add_argument("--modes", default="a,b,c", help="comma-separated subset of a,b,c (default a,b,c)")
    parser.add_argument(
        "--receivers",
        default=",".join(RECEIVERS),
        help=f"comma-separated subset of {','.join(RECEIVERS)} (default all)",
    )
    parser.add_argument("--senders", type=int, default=4, help="concurrent storescu processes in mode c (default 4)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folders (series, received data, logs)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.receivers = [r.strip() for r in args.receivers.split(",") if r.strip()]
    if not args.modes or set(args.modes) - set(MODES):
        parser.error(f"--modes: choose from {','.join(MODES)}")
    if not args.receivers or set(args.receivers) - set(RECEIVERS):
        parser.error(f"--receivers: choose from {','.join(RECEIVERS)}")
    if args.repeat < 1 or args.slices < 1 or args.senders < 1:
        parser.error("--repeat, --slices and --senders must be >= 1")
    return args


def main() -> int:
    args = parse_args()
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        say(f"error: missing {', '.join(missing)} (Debian packages dcmtk and orthanc)")
        return 2
    began = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    finished = False
    try:
        say(f"writing a {args.slices}-slice phantom CT series (seed {args.seed}) into {tmp / 'ct'} ...")
        files = write_series(tmp / "ct", args.slices, args.seed)
        mb_per_file = sum(p.stat().st_size for p in files) / len(files) / 1e6
        parts = split_series(files, args.senders, tmp / "split") if "c" in args.modes else []
        runs: list[Run] = []
        results: dict[str, dict[str, Any]] = {}
        for mode in args.modes:
            folders = parts if mode == "c" else [tmp / "ct"]
            title = MODES[mode].format(senders=len(parts), per=f"{len(files) // max(1, len(parts))}")
            say(f"mode {mode}: {title}")
            mode_runs = []
            for rep in range(args.repeat):
                turn = rep % len(args.receivers)
                for name in args.receivers[turn:] + args.receivers[:turn]:
                    workdir = tmp / f"{mode}-{rep}-{name}"
                    run = one_run(mode, name, rep, folders, len(files), workdir)
                    if not args.keep:
                        shutil.rmtree(workdir, ignore_errors=True)
                    mode_runs.append(run)
                    say(
                        f"  [{mode} {rep + 1}/{args.repeat}] {name:8s} {run.files} files {run.wall_s:7.2f} s "
                        f"{run.per_s:7.1f} inst/s  peak RSS {run.rss_mb:4.0f} MB  CPU {run.cpu_s:5.2f} s  "
                        f"(start {run.start_s:.1f} s)"
                    )
            summary = summarise(mode_runs, mb_per_file)
            results[mode] = {"title": title, "summary": summary}
            runs += mode_runs
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
        f"C-STORE ingest of a {len(files)}-slice CT series ({mb_per_file:.2f} MB a file, "
        f"{mb_per_file * len(files):.0f} MB) by DCMTK storescu over 127.0.0.1"
    )
    print(
        f"{info['storescu']}; {info['orthanc']}; Python {info['python']}; {info['cpus']} CPUs; commit {info['commit']}"
    )
    print("every run: a fresh receiver on empty storage; storescp does not fsync, Orthanc and the node do")
    for mode in args.modes:
        entry = results[mode]
        entry.update(report(mode, entry["title"], entry["summary"], len(files), args.repeat))
    command = ".venv/bin/python bench/ingest.py " + " ".join(
        [
            f"--repeat {args.repeat}",
            f"--slices {args.slices}",
            f"--seed {args.seed}",
            f"--modes {','.join(args.modes)}",
            f"--receivers {','.join(args.receivers)}",
            f"--senders {args.senders}",
        ]
    )
    print(f"\ntook {elapsed:.0f} s; reproduce with: {command}")
    if args.keep:
        print(f"temporary folders kept in {tmp}")
    if args.json:
        payload = {
            "command": command,
            "versions": info,
            "files": len(files),
            "mb_per_file": mb_per_file,
            "elapsed_s": elapsed,
            "modes": results,
            "runs": [asdict(r) for r in runs],
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
