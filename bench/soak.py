"""Soak test: the fault-injection cycles of tests/e2e/test_faults.py, hundreds of them.

    .venv/bin/python bench/soak.py [--cycles 100] [--seed S] [--slices 12] [--size 128] [--json FILE] [--keep DIR]

One ``pacs-node serve`` (two receiver processes; analysis worker: lung-nodule-ct, one thread; sender; an
instance-level rule that forwards every CT to the PACS; a series rule that analyses it and sends SEG + SR
to the PACS) and one Orthanc as the PACS. Each cycle sends a new phantom CT series (``--slices`` x
``--size``^2) from two pynetdicom SCUs at once (half each) and ``kill -9``s one process at one point, the
kinds of tests/faults.py's KINDS in turn in a seeded random order: serve at receive, a receiver child at
receive, serve at spool-to-index (inotify on the spool's temp folder), serve at a journal write, at a
checkpoint and during the replay, worker and serve during an analysis, sender (its association held open
between batches) and serve during sends (forwards or results). After each kill of serve the node is
restarted and the SCUs send again what got no success status. tests/faults.py has the details.

Checked after every cycle: every instance that got a success status is indexed and its spool file parses
with that SOP Instance UID; ``spool/.tmp`` is empty after each start-up. At the end, after the node has
settled: every indexed instance and every finished analysis's SEG + SR reached the PACS (Orthanc, counted
through its REST API), nothing twice; no dead job, no expired lease, no temp file in the outbox.

Prints a line per cycle and the tally (cycles, instances acknowledged, lost, duplicate deliveries, re-sends
of a UID the PACS already had, what the kills left behind); ``--json`` writes it. Exit status 1 when
anything was lost or delivered twice, or any invariant failed. The seed is printed; ``--seed`` repeats a run.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.faults import FaultRun


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100, help="kill cycles (default 100)")
    parser.add_argument("--seed", type=int, help="seed of every choice (default: random, printed)")
    parser.add_argument("--slices", type=int, default=12, help="slices per study (default 12; the model needs 10)")
    parser.add_argument("--size", type=int, default=128, help="rows and columns per slice (default 128)")
    parser.add_argument("--json", type=Path, help="write the tally to this file")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    work = args.keep or Path(tempfile.mkdtemp(prefix="pacs-node-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"soak: {args.cycles} cycles, seed {seed} (--seed {seed} repeats it), in {work}", flush=True)
    began = time.monotonic()
    try:
        with FaultRun(
            work / "run", seed, say=lambda line: print(line, flush=True), slices=args.slices, size=args.size
        ) as run:
            tally = run.run(args.cycles)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(f"wall time {time.monotonic() - began:.0f} s ({(time.monotonic() - began) / args.cycles:.1f} s a cycle)")
    if args.json:
        tally.write(args.json)
    for problem in tally.problems:
        print(f"PROBLEM {problem}")
    return 0 if tally.lost == 0 and tally.duplicates == 0 and not tally.problems else 1


if __name__ == "__main__":
    sys.exit(main())
