"""The router: a complete study becomes jobs.

For now the rules are the ``[analysis]`` section: every complete study gets one ``analyse`` job per
configured model; the worker then picks the series each model's card accepts (a study without such a
series ends as a done job with nothing to send). Declarative rules (forwarding, per-rule analyses and
priorities) come with the routing issue and replace this table.
"""

from __future__ import annotations

import logging

from node.config import NodeConfig
from node.jobs import JobStore
from node.jobs.kinds import ANALYSE, analyse_key
from node.store import Index

log = logging.getLogger(__name__)


class Router:
    """Turns complete studies into jobs in the job store."""

    def __init__(self, config: NodeConfig, index: Index, jobs: JobStore) -> None:
        self.config = config
        self.index = index
        self.jobs = jobs

    def study_complete(self, study_uid: str) -> list[int]:
        """Enqueue the analyses of a complete study; return the job ids (existing ones when already enqueued)."""
        summary = self.index.study_summary(study_uid)
        count = summary.instances if summary is not None else 0
        ids = [
            self.jobs.enqueue(
                ANALYSE, {"study": study_uid, "model": model}, dedup_key=analyse_key(model, study_uid, count), once=True
            )
            for model in self.config.analysis.models
        ]
        if not ids:
            log.info("study complete (%d instances): no analysis configured", count)
        return ids
