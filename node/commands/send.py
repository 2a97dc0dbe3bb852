"""``pacs-node send FILES_OR_DIRS... --to PEER_OR_HOST:PORT``: C-STORE files to a peer, now (no job store)."""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

from node.commands.echo import add_connection_options, connection
from node.commands.output import progress_bar, say
from node.dicom.status import describe
from node.send.errors import SendError
from node.send.scu import FileOutcome, Verdict, store_files

_PREAMBLE = 128
_SHOWN = 10  # skipped files and per-file failures listed before "... and N more"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "send",
        help="send DICOM files to a peer (C-STORE), now",
        description=textwrap.fill(
            "Send DICOM Part-10 files, and every such file under the given folders, to a peer (a name from "
            "--config, or HOST:PORT) over one association, as they are stored (compressed files stay compressed). "
            "Other files are skipped with a note. Prints what was sent, what failed (by the peer's status) and what "
            "was not sent (and why); exits 1 if any file was not stored by the peer. Nothing is queued: for retries "
            "over hours, let 'serve' send.",
            width=100,
        ),
        epilog="examples:\n"
        "  pacs-node send demo/ct --to pacs --config config/node.toml\n"
        "  pacs-node send a.dcm b.dcm --to 127.0.0.1:4242 -aec ORTHANC",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", type=Path, metavar="FILES_OR_DIRS", help="files and folders (searched deeply)")
    p.add_argument("--to", required=True, metavar="PEER_OR_HOST:PORT", help="a peer name from --config, or HOST:PORT")
    add_connection_options(p)
    p.set_defaults(func=run)


def _walk(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file())
        elif path.exists():
            yield path
        else:
            raise SendError(f"{path}: no such file or folder")


def _why_not_dicom(path: Path) -> str | None:
    """Why ``path`` is skipped, or ``None`` for a DICOM Part-10 file (preamble then 'DICM')."""
    if path.name.upper() == "DICOMDIR":
        return "a DICOMDIR (the index of a media folder), not an instance"
    try:
        with path.open("rb") as f:
            head = f.read(_PREAMBLE + 4)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None if head[_PREAMBLE:] == b"DICM" else "not a DICOM Part-10 file"


def dicom_files(paths: Iterable[Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The DICOM Part-10 files among ``paths`` (folders searched deeply), and the skipped ones with why."""
    files: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for path in _walk(paths):
        why = _why_not_dicom(path)
        if why is None:
            files.append(path)
        else:
            skipped.append((path, why))
    return files, skipped


def _listed(lines: list[str]) -> None:
    for line in lines[:_SHOWN]:
        say(f"  {line}")
    if len(lines) > _SHOWN:
        say(f"  ... and {len(lines) - _SHOWN} more")


def run(args: argparse.Namespace) -> int:
    destination, settings, _ = connection(args, args.to)
    files, skipped = dicom_files(args.paths)
    if skipped:
        say(f"skipping {len(skipped)} files that are not DICOM Part-10:")
        _listed([f"{path}: {why}" for path, why in skipped])
    if not files:
        raise SendError("no DICOM files to send")
    say(f"sending {len(files)} files to {destination} ...")
    bar = progress_bar("sending")
    done = 0

    def on_result(outcome: FileOutcome) -> None:
        nonlocal done
        done += 1
        bar(done, len(files))

    started = time.monotonic()
    outcomes = store_files(destination, files, settings, on_result=on_result)
    seconds = time.monotonic() - started
    sent = [o for o in outcomes if o.verdict is Verdict.SENT]
    failed = [o for o in outcomes if o.verdict is not Verdict.SENT and o.status is not None]
    not_sent = [o for o in outcomes if o.verdict is not Verdict.SENT and o.status is None]
    rate = f" ({len(sent) / seconds:.0f} instances/s)" if sent and seconds > 0 else ""
    print(f"sent {len(sent)} of {len(files)} files to {destination} in {seconds:.1f} s{rate}")
    warnings = Counter(describe(o.status) for o in sent if o.reason and o.status is not None)
    if warnings:
        print(f"  with warnings: {', '.join(f'{status}: {n}' for status, n in sorted(warnings.items()))}")
    if failed:
        by_status = Counter(describe(o.status) for o in failed if o.status is not None)
        print(f"  failed: {len(failed)} ({', '.join(f'{status}: {n}' for status, n in sorted(by_status.items()))})")
    if not_sent:
        print(f"  not sent: {len(not_sent)}")
    reasons = Counter(o.reason for o in (*failed, *not_sent))  # "connection refused" once, not per file
    if reasons:
        print("why:", file=sys.stderr, flush=True)
        _listed([reason if n == 1 else f"{reason} ({n} files)" for reason, n in reasons.items()])
    return 1 if failed or not_sent else 0
