"""The analysis worker: claims ``analyse`` jobs, runs the analysis core, writes results to the outbox and
enqueues their sends. It runs in its own process (``pacs-node worker``, or started by ``serve``): a slow or
failing model never stalls the receiver (DESIGN §3).

- :mod:`~node.worker.study`: one study with one model -> result files and a manifest in the outbox.
- :mod:`~node.worker.loop`: the job loop (claim, heartbeat, complete / fail / release, SIGTERM).
"""

from __future__ import annotations

from node.worker.loop import Worker
from node.worker.study import Manifest, analyse_study

__all__ = ["Manifest", "Worker", "analyse_study"]
