"""``pacs-node status``: the retention line, from what serve writes in ``status.json``."""

from __future__ import annotations

import time

import pytest

from node.commands.jobs import _retention_line


@pytest.mark.parametrize(
    ("totals", "line"),
    [
        (None, "retention: unknown (serve predates it)"),
        ({"enabled": False}, "retention: off (nothing is deleted)"),
        (
            {"enabled": True, "last_pass": None, "studies": 0, "bytes": 0, "held": 0},
            "retention: last pass not yet, 0 studies (0.0 MB) deleted since start",
        ),
        (
            {"enabled": True, "last_pass": -30.0, "studies": 3, "bytes": 12_500_000, "held": 2},
            "retention: last pass 30 s ago, 3 studies (12.5 MB) deleted since start; "
            "2 old studies kept for unfinished jobs",
        ),
    ],
)
def test_the_retention_line(totals: dict[str, object] | None, line: str) -> None:
    if totals is not None and isinstance(totals.get("last_pass"), float):
        totals = totals | {"last_pass": time.time() + float(totals["last_pass"])}  # type: ignore[arg-type]
    assert _retention_line(totals) == line
