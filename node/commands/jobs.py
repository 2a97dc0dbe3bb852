"""``pacs-node jobs list|show|retry`` and ``pacs-node status``: what the node is doing, what failed."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from node.config import NodeConfig, load_config
from node.errors import NodeError
from node.jobs import Job, JobState, JobStore
from node.store import Index, free_mb

STATUS_FILE = "status.json"  # written by serve every few seconds (node.app)


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True, metavar="FILE", help="the node's TOML config file")


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    jobs = sub.add_parser(
        "jobs",
        help="list, show and retry jobs (analyses and sends)",
        description="The job store holds every analysis and every send with its state: queued (waiting, maybe "
        "for a retry after a failure), running, done, or dead (attempts used up or an error another try cannot "
        "fix: it needs a person). 'retry' puts dead jobs back in the queue.",
        epilog="examples:\n  pacs-node jobs list --config config/node.toml --state dead\n"
        "  pacs-node jobs show 42 --config config/node.toml\n"
        "  pacs-node jobs retry --all-dead --config config/node.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = jobs.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="jobs, newest first")
    _config_arg(ls)
    ls.add_argument("--state", choices=[s.value for s in JobState], help="only jobs in this state")
    ls.add_argument("--kind", help="only jobs of this kind, e.g. analyse or send:pacs")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    ls.set_defaults(func=list_jobs)
    show = actions.add_parser("show", help="one job with its payload and last error")
    _config_arg(show)
    show.add_argument("id", type=int, metavar="ID")
    show.set_defaults(func=show_job)
    retry = actions.add_parser("retry", help="put dead jobs back in the queue")
    _config_arg(retry)
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", type=int, nargs="?", metavar="ID", help="the dead job to retry")
    which.add_argument("--all-dead", action="store_true", help="every dead job (of --kind, if given)")
    retry.add_argument("--kind", help="with --all-dead: only this kind")
    retry.set_defaults(func=retry_jobs)

    status = sub.add_parser(
        "status",
        help="is the node running; queues per state; failures; disk",
        description="Reads the data dir of the config: whether serve is running (its status file is fresh), open "
        "associations, what retention deleted since serve started, jobs per kind and state, the latest dead "
        "jobs with their errors, studies received and free disk space against limits.min_free_disk_mb. Exit "
        "code 0 when serve is running and nothing is dead, 1 otherwise (usable by monitoring).",
        epilog="example: pacs-node status --config config/node.toml",
    )
    _config_arg(status)
    status.set_defaults(func=show_status)


def _open(args: argparse.Namespace) -> tuple[NodeConfig, JobStore]:
    config = load_config(args.config)
    if not config.node.jobs_path.exists():
        raise NodeError(f"no job store at {config.node.jobs_path}: has the node run with this config yet?")
    return config, JobStore(config.node.jobs_path)


def _ago(t: float | None) -> str:
    if t is None:
        return "-"
    seconds = time.time() - t
    if seconds < 0:
        return f"in {-seconds:.0f} s"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def _line(job: Job) -> str:
    error = (job.last_error or "").splitlines()[0][:70] if job.last_error else ""
    wait = f"next try {_ago(job.not_before)}" if job.state is JobState.QUEUED and job.not_before > time.time() else ""
    return f"{job.id:>6}  {job.kind:<14} {job.state:<7} {job.attempts:>3}  {_ago(job.updated):<14} {wait:<18} {error}"


def list_jobs(args: argparse.Namespace) -> int:
    _, store = _open(args)
    with store:
        found = store.list(args.state, args.kind, args.limit)
    if not found:
        print("no jobs" + (f" in state {args.state}" if args.state else ""))
        return 0
    print(f"{'id':>6}  {'kind':<14} {'state':<7} {'try':>3}  {'updated':<14} {'':<18} last error")
    for job in found:
        print(_line(job))
    return 0


def show_job(args: argparse.Namespace) -> int:
    _, store = _open(args)
    with store:
        job = store.get(args.id)
    if job is None:
        raise NodeError(f"no job {args.id} (see 'pacs-node jobs list')")
    print(f"job {job.id}: {job.kind}, {job.state}, attempt {job.attempts}")
    print(f"  created {_ago(job.created)}, updated {_ago(job.updated)}")
    if job.state is JobState.QUEUED:
        print(f"  claimable {_ago(job.not_before) if job.not_before > time.time() else 'now'}")
    if job.lease_owner:
        print(f"  lease: {job.lease_owner}, expires {_ago(job.lease_expires)}")
    print(f"  payload: {json.dumps(job.payload, sort_keys=True)}")
    if job.last_error:
        print(f"  last error: {job.last_error}")
    return 0


def retry_jobs(args: argparse.Namespace) -> int:
    _, store = _open(args)
    with store:
        ids = [args.id] if args.id is not None else [j.id for j in store.list("dead", args.kind, limit=1_000_000)]
        for job_id in ids:
            store.retry(job_id)
            print(f"job {job_id}: queued again")
    if not ids:
        print("no dead jobs")
    return 0


def _retention_line(totals: object) -> str:
    """What retention did since serve started (``status.json``'s ``retention``, see node.store.retention)."""
    if not isinstance(totals, dict):
        return "retention: unknown (serve predates it)"
    if not totals.get("enabled", True):
        return "retention: off (nothing is deleted)"
    last = totals.get("last_pass")
    held = int(totals.get("held", 0))
    kept = f"; {held} old studies kept for unfinished jobs" if held else ""
    return (
        f"retention: last pass {_ago(float(last)) if last is not None else 'not yet'}, "
        f"{int(totals.get('studies', 0))} studies ({int(totals.get('bytes', 0)) / 1e6:,.1f} MB) deleted since start"
        f"{kept}"
    )


def show_status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    node = config.node
    healthy = True
    status_path = node.data_dir / STATUS_FILE
    running = None
    if status_path.exists():
        running = json.loads(status_path.read_text(encoding="utf-8"))
    if running is not None and time.time() - float(running.get("updated", 0)) < 30:
        print(
            f"serve: running (pid {running['pid']}) on {running['listening']}, up {_ago(running['started'])[:-4]}, "
            f"{running['associations']} associations open, workers {running['workers_alive']}/"
            f"{running['workers_configured']}"
        )
        if config.web.enabled:
            web = config.web
            state = "running" if running.get("web_alive") else "NOT RUNNING"
            print(f"web console: {state} on {web.scheme}://{web.bind}:{web.port}")
        print(_retention_line(running.get("retention")))
    else:
        print(f"serve: not running (no fresh {status_path})")
        healthy = False
    if node.jobs_path.exists():
        with JobStore(node.jobs_path) as store:
            counts = store.counts()
            dead = store.list("dead", limit=5)
            retrying = [job for job in store.list("queued", limit=100_000) if job.attempts > 0]
        kinds = sorted({kind for kind, _ in counts})
        print("jobs:" if kinds else "jobs: none yet")
        for kind in kinds:
            per = ", ".join(f"{counts.get((kind, s), 0)} {s}" for s in JobState)
            print(f"  {kind:<14} {per}")
        for kind in sorted({job.kind for job in retrying}):
            jobs = [job for job in retrying if job.kind == kind]
            latest = max(jobs, key=lambda job: job.updated)
            error = (latest.last_error or "").splitlines()[0][:90] if latest.last_error else ""
            print(
                f"  retrying {kind}: {len(jobs)} jobs, up to {max(j.attempts for j in jobs)} attempts, "
                f"next try {_ago(min(j.not_before for j in jobs))}: {error}"
            )
        if dead:
            healthy = False
            print("latest dead jobs (retry with 'pacs-node jobs retry ID'):")
            for job in dead:
                print(f"  {job.id:>6} {job.kind:<14} {(job.last_error or '').splitlines()[0][:90]}")
    if node.index_path.exists():
        index = Index(node.index_path)
        try:
            studies = index.studies_received_since(0.0)
            waiting = sum(1 for s in studies if (sm := index.study_summary(s)) is not None and sm.completed_at is None)
            print(f"studies: {len(studies)} received, {waiting} waiting for completion")
        finally:
            index.close()
    if node.data_dir.exists():
        free = free_mb(node.data_dir)
        floor = config.limits.min_free_disk_mb
        low = free < floor
        healthy = healthy and not low
        warning = ": REFUSING STORES" if low else ""
        print(f"disk: {free:,.0f} MB free under {node.data_dir} (floor {floor:,} MB){warning}")
    return 0 if healthy else 1
