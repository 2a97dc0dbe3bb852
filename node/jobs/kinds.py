"""Job kinds and their payloads: the contract between the processes that share the job store.

``analyse``
    ``{"study": Study Instance UID, "model": model folder name}``; dedup key
    ``"<model>|<study>|<instances>"`` with ``once``: a study is analysed once per model for each
    instance count it completes with (late instances that reopen it make a new count, hence a new job).
``send:<peer>``
    ``{"peer": peer name, "path": file under data_dir, "sop": SOP Instance UID, "sop_class": ...}``;
    dedup key ``"<peer>|<sop>"`` with ``once`` (see :mod:`node.send`).
"""

from __future__ import annotations

ANALYSE = "analyse"


def analyse_key(model: str, study_uid: str, instances: int) -> str:
    return f"{model}|{study_uid}|{instances}"
