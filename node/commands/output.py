"""What commands print: progress lines on stderr, results on stdout. No patient data."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable


def say(message: str) -> None:
    """A progress line (stderr, so stdout stays clean for results)."""
    print(message, file=sys.stderr, flush=True)


def progress_bar(title: str, every: float = 0.5) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback: an updating bar on a terminal, a few plain lines otherwise."""
    tty = sys.stderr.isatty()
    state = {"last": 0.0, "quarter": -1}
    started = time.monotonic()

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        finished = done >= total
        if tty:
            if finished or now - state["last"] >= every:
                state["last"] = now
                width = 30
                fill = int(width * done / max(total, 1))
                end = "\n" if finished else ""
                print(
                    f"\r  {title} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}",
                    end=end,
                    file=sys.stderr,
                    flush=True,
                )
            return
        quarter = int(4 * done / max(total, 1))
        if quarter > state["quarter"]:
            state["quarter"] = quarter
            print(f"  {title}: {done}/{total} ({now - started:.1f} s)", file=sys.stderr, flush=True)

    return update
