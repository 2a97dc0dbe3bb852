"""Job kinds and their payloads: the contract between the processes that share the job store.

``analyse``
    ``{"study": Study Instance UID, "series": Series Instance UID or null (every series the card
    accepts), "model": model folder name, "results_to": [peer names]}``; dedup key
    ``"<model>|<study>|<series or *>|<instances>"`` with ``once``: analysed once per model and scope for
    each instance count the study completes with (late instances that reopen it make a new count).
    Its results go to ``outbox/analyse-<job id>/`` (``NodeSection.results_dir``).
``send:<peer>``
    ``{"peer": peer name, "path": file under data_dir, "sop": SOP Instance UID, "sop_class": ...}``;
    dedup key ``"<peer>|<sop>"`` with ``once`` (see :mod:`node.send`). ``path`` is
    ``spool/<study>/<series>/<sop>.dcm`` for a forwarded instance, ``outbox/analyse-<job id>/...`` for a
    result of that analysis.
``notify:<target>``
    ``{"target": [[notify]] name, "path": "outbox/analyse-<job id>/<series>/findings.json", "result": the
    SR's SOP Instance UID, "model": model folder name}``; dedup key ``"<target>|<result>"`` with ``once``
    (see :mod:`node.notify.jobs`): each result notifies each target once.

Every job is filed under the study it concerns (the store's ``study`` column, from :func:`study_of` at
enqueue time), so retention can tell whether a study still has work ahead of it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

ANALYSE = "analyse"
SEND_KIND_PREFIX = "send:"
NOTIFY_KIND_PREFIX = "notify:"


PRIORITY = {"urgent": 10, "normal": 0, "low": -10}  # a rule's priority as the job store's number

# The two places a send's file can be (see the module docstring); the folder names are NodeSection's.
_FORWARDED = re.compile(r"spool/([0-9.]+)/[^/]+/[^/]+")
_RESULT = re.compile(r"outbox/analyse-([0-9]+)/.+")


def analyse_key(model: str, study_uid: str, series_uid: str | None, instances: int) -> str:
    return f"{model}|{study_uid}|{series_uid or '*'}|{instances}"


def study_of(kind: str, payload: Mapping[str, Any], analysis_study: Callable[[int], str | None]) -> str | None:
    """The Study Instance UID a job concerns, from its kind and payload; ``None`` when it names none.

    Parameters
    ----------
    kind, payload
        The job's, as enqueued.
    analysis_study
        The study of the ``analyse`` job with this id (a result send belongs to its analysis's study).
    """
    if kind == ANALYSE:
        study = payload.get("study")
        return study if isinstance(study, str) and study else None
    if kind.startswith((SEND_KIND_PREFIX, NOTIFY_KIND_PREFIX)):  # a notification names its result's findings.json
        path = payload.get("path")
        if not isinstance(path, str):
            return None
        if forwarded := _FORWARDED.fullmatch(path):
            return forwarded.group(1)
        if result := _RESULT.fullmatch(path):
            return analysis_study(int(result.group(1)))
    return None
