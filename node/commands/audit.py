"""``pacs-node audit tail``: read the audit trail (who sent what, when, where it went)."""

from __future__ import annotations

import argparse
import json
import re
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from node.audit import OUTCOMES, audit_path, read
from node.config import load_config
from node.errors import InputError

_WORDS = {v: k for k, v in OUTCOMES.items()}
_SHOWN_FIRST = ("time", "event", "event_id", "outcome", "node", "pid")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = sub.add_parser(
        "audit",
        help="read the audit trail (associations, studies received, instances sent, failures)",
        description="The audit trail is separate from the logs: one record per association accepted or rejected, "
        "study received (instances, series, from which AE and address), batch of instances sent (to which peer, "
        "how many, which studies), dead job, study deleted by retention, and node start and stop. It holds no "
        "patient name, ID or birth date.",
        epilog="examples:\n  pacs-node audit tail --config config/node.toml\n"
        "  pacs-node audit tail --since 2h --config config/node.toml\n"
        "  pacs-node audit tail --since 2026-11-24T08:00 --json --config config/node.toml",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = audit.add_subparsers(dest="action", required=True, metavar="ACTION")
    tail = actions.add_parser("tail", help="the latest records, oldest first")
    tail.add_argument("--config", type=Path, required=True, metavar="FILE", help="the node's TOML config file")
    tail.add_argument(
        "--since", metavar="WHEN", help="only records from then on: 30m, 2h, 7d, or a date/time (2026-11-24T08:00)"
    )
    tail.add_argument(
        "-n", "--lines", type=int, default=50, metavar="N", help="at most the last N records (default 50)"
    )
    tail.add_argument("--json", action="store_true", help="the records as stored, one JSON object per line")
    tail.set_defaults(func=run_tail)


def parse_since(text: str, now: float | None = None) -> float:
    """``30m``/``2h``/``7d``/``45s`` ago, or an ISO date/time (local time when it has no zone), as epoch seconds."""
    now = time.time() if now is None else now
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text.strip())
    if match:
        value, unit = float(match.group(1)), match.group(2)
        return now - value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise InputError(
            f"--since {text!r}: give a duration such as 30m, 2h or 7d, or a date/time such as 2026-11-24T08:00"
        ) from None


def format_record(entry: dict[str, Any]) -> str:
    """``2026-11-24T08:01:02.345+00:00 study-received (success) study=1.2.3 instances=300 ...``."""
    outcome = _WORDS.get(int(entry.get("outcome", 0)), str(entry.get("outcome")))
    rest = " ".join(
        f"{key}={json.dumps(value, separators=(',', ':')) if not isinstance(value, str) else value}"
        for key, value in entry.items()
        if key not in _SHOWN_FIRST
    )
    return f"{entry.get('time')} {entry.get('event')} ({outcome}) {rest}".rstrip()


def run_tail(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    since = parse_since(args.since) if args.since else None
    path = audit_path(config.node.data_dir)
    entries = list(read(path, since))[-args.lines :] if args.lines > 0 else []
    if not entries:
        print(f"no audit records{' in that period' if since else ''} in {path}")
        return 0
    for entry in entries:
        print(json.dumps(entry, separators=(",", ":")) if args.json else format_record(entry))
    return 0
