"""``pacs-node rules test|explain``: why a rule did or did not match, and what happened to a study."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from node.config import NodeConfig, Rule, load_config
from node.errors import InputError, NodeError
from node.jobs import Job, JobState, JobStore
from node.routing.log import RoutingLog
from node.routing.match import Facts, Verdict, evaluate_all


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rules = sub.add_parser(
        "rules",
        help="test routing rules on files; explain what happened to a received study",
        description="'test' evaluates the config's rules on DICOM files without sending anything: per series, "
        "each rule in order, whether it matched, the condition that failed with the actual value, and the actions "
        "that would run. 'explain' tells, for a study the node received, which rules matched, where it was "
        "forwarded, which analyses ran, and each send's state and attempts.",
        epilog="examples:\n  pacs-node rules test demo/ct --config config/examples/rules.toml --calling-ae CT1\n"
        "  pacs-node rules explain 1.2.826.0.1.3680043.8.498.1 --config config/node.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = rules.add_subparsers(dest="action", required=True, metavar="ACTION")
    test = actions.add_parser("test", help="evaluate the rules on files or folders")
    test.add_argument("paths", nargs="+", type=Path, metavar="FILE_OR_DIR")
    test.add_argument("--config", type=Path, required=True, metavar="FILE", help="the node's TOML config file")
    test.add_argument("--calling-ae", default="", metavar="AE", help="pretend the files came from this AE title")
    test.add_argument("--called-ae", default=None, metavar="AE", help="the AE title they were sent to (default: ours)")
    test.add_argument("--address", default="", metavar="IP", help="pretend the files came from this address")
    test.set_defaults(func=run_test)
    explain = actions.add_parser("explain", help="what happened to a received study")
    explain.add_argument("study", metavar="STUDY_UID")
    explain.add_argument("--config", type=Path, required=True, metavar="FILE", help="the node's TOML config file")
    explain.set_defaults(func=run_explain)


def describe_actions(rule: Rule, config: NodeConfig) -> str:
    """What a matched rule does, in words."""
    if rule.discard:
        return "discard (store only)"
    parts = []
    if rule.forward:
        parts.append(f"forward to {', '.join(rule.forward)}")
    if rule.analyse:
        results = rule.results_to if rule.results_to is not None else config.analysis.send_results_to
        parts.append(f"analyse with {', '.join(rule.analyse)} (results to {', '.join(results) or 'nobody'})")
    if rule.priority != "normal":
        parts.append(f"priority {rule.priority}")
    if rule.quiet_seconds is not None:
        parts.append(f"quiet period {rule.quiet_seconds:g} s")
    if rule.stop:
        parts.append("stop")
    return ", ".join(parts) or "nothing"


def _files(paths: Sequence[Path]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            found.append(path)
        else:
            raise InputError(f"{path}: no such file or folder")
    return found


def _line(verdict: Verdict, config: NodeConfig) -> str:
    mark = "MATCH" if verdict.matched else "no   "
    text = f"  {mark} {verdict.rule.name} [{verdict.rule.level}]: {verdict.explain()}"
    return text + (f" -> {describe_actions(verdict.rule, config)}" if verdict.matched else "")


def run_test(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    facts = Facts(args.calling_ae, args.called_ae or config.node.ae_title, args.address)
    rules = config.effective_rules()
    series: dict[str, list[tuple[Path, Dataset]]] = {}
    skipped = 0
    for path in _files(args.paths):
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            skipped += 1
            continue
        series.setdefault(str(ds.get("SeriesInstanceUID", "?")), []).append((path, ds))
    if not series:
        raise InputError(f"no DICOM files in {', '.join(map(str, args.paths))}")
    print(
        f"{len(rules)} rules from {args.config}; facts: calling AE '{facts.calling_ae}', called AE "
        f"'{facts.called_ae}', address '{facts.source_address}'"
    )
    for uid, members in series.items():
        first = members[0][1]
        print(
            f"\nseries {uid} ({first.get('Modality', '?')}, '{first.get('SeriesDescription', '')}', "
            f"{len(members)} files)"
        )
        # Instance rules run on every instance, in order and with their stop semantics; shown per rule.
        per_instance = [evaluate_all(rules, ds, facts, level="instance") for _, ds in members]
        for column in zip(*per_instance, strict=True):
            hits = sum(v.matched for v in column)
            # Show why it failed where it was evaluated; "not evaluated" (an earlier stop) only otherwise.
            misses = [v for v in column if not v.matched]
            shown = next((v for v in misses if v.evaluated), misses[0] if misses else column[0])
            print(f"{_line(shown, config)} ({hits} of {len(members)} instances match)")
        matched = False
        for verdict in evaluate_all(rules, first, facts, level="series") + evaluate_all(
            rules, first, facts, level="study"
        ):
            matched |= verdict.matched
            print(_line(verdict, config))
        if not matched:
            fb = config.fallback
            what = ", ".join(
                [f"forward to {', '.join(fb.forward)}"] * bool(fb.forward)
                + [f"analyse with {', '.join(fb.analyse)}"] * bool(fb.analyse)
            )
            print(f"  no series or study rule matched: [fallback] -> {what or 'nothing (store only)'}")
    if skipped:
        print(f"\n{skipped} files skipped (not DICOM)")
    return 0


def run_explain(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    node = config.node
    path = node.data_dir / "routing.sqlite3"
    if not path.exists() or not node.jobs_path.exists():
        raise NodeError(f"nothing received yet in {node.data_dir} (no routing log or job store)")
    log = RoutingLog(path)
    try:
        decisions = log.decisions(args.study)
    finally:
        log.close()
    with JobStore(node.jobs_path) as jobs:
        analyses = jobs.search(f'"study":"{args.study}"')
        forwards = jobs.search(f'"path":"spool/{args.study}/')
        results = [j for a in analyses for j in jobs.search(f'"path":"outbox/analyse-{a.id}/')]
    if not decisions and not analyses and not forwards:
        raise NodeError(f"study {args.study}: the node has no record of it (check the UID and --config)")
    print(f"study {args.study}")
    print("rules:")
    for d in decisions:
        where = "" if d.series == "*" else f" series {d.series}"
        result = f"matched -> {d.actions}" if d.matched else f"not matched: {d.detail}"
        print(f"  {d.rule} [{d.level}]{where}: {result}")
    _sends("forwarded", forwards)
    print(f"analyses: {len(analyses) or 'none'}")
    for job in analyses:
        scope = f" series {job.payload['series']}" if job.payload.get("series") else ""
        error = (
            f" ({job.last_error.splitlines()[0][:100]})" if job.last_error and job.state is not JobState.DONE else ""
        )
        print(f"  job {job.id} {job.payload.get('model')}{scope}: {job.state}, attempt {job.attempts}{error}")
    _sends("results sent", results)
    return 0


def _sends(title: str, sends: Sequence[Job]) -> None:
    if not sends:
        print(f"{title}: none")
        return
    peers: dict[str, dict[str, int]] = {}
    for job in sends:
        per = peers.setdefault(str(job.payload.get("peer")), {})
        per[str(job.state)] = per.get(str(job.state), 0) + 1
    print(f"{title}:")
    for peer, states in peers.items():
        attempts = max(j.attempts for j in sends if j.payload.get("peer") == peer)
        counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
        print(f"  {peer}: {counts} (most attempts: {attempts})")
    for job in sends:
        if job.state is JobState.DEAD and job.last_error:
            print(f"  job {job.id} dead: {job.last_error.splitlines()[0][:120]}")
            break
