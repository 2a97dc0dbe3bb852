"""Job kinds and their payloads: the contract between the processes that share the job store.

``analyse``
    ``{"study": Study Instance UID, "series": Series Instance UID or null (every series the card
    accepts), "model": model folder name, "results_to": [peer names]}``; dedup key
    ``"<model>|<study>|<series or *>|<instances>"`` with ``once``: analysed once per model and scope for
    each instance count the study completes with (late instances that reopen it make a new count).
``send:<peer>``
    ``{"peer": peer name, "path": file under data_dir, "sop": SOP Instance UID, "sop_class": ...}``;
    dedup key ``"<peer>|<sop>"`` with ``once`` (see :mod:`node.send`).
"""

from __future__ import annotations

ANALYSE = "analyse"


PRIORITY = {"urgent": 10, "normal": 0, "low": -10}  # a rule's priority as the job store's number


def analyse_key(model: str, study_uid: str, series_uid: str | None, instances: int) -> str:
    return f"{model}|{study_uid}|{series_uid or '*'}|{instances}"
