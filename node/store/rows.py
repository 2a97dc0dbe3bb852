"""The index's tables, their migrations, and the row types it returns."""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 6
BUSY_TIMEOUT_MS = 10_000

SCHEMA = """
CREATE TABLE instances (
    -- The rowid, never reused (AUTOINCREMENT): the router's cursor and retention's "routed" check count on
    -- a new row having a higher rowid than every row before it, also after retention deleted the newest.
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    sop_instance_uid    TEXT NOT NULL UNIQUE,
    study_instance_uid  TEXT NOT NULL,
    series_instance_uid TEXT NOT NULL,
    sop_class_uid       TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    path                TEXT NOT NULL,  -- relative to the spool root
    size                INTEGER NOT NULL,
    calling_ae          TEXT NOT NULL,
    received_at         REAL NOT NULL,
    association_id      TEXT NOT NULL,
    called_ae           TEXT NOT NULL DEFAULT '',
    source_address      TEXT NOT NULL DEFAULT ''
);
CREATE INDEX instances_by_series ON instances (study_instance_uid, series_instance_uid);
CREATE TABLE studies (
    study_instance_uid TEXT PRIMARY KEY,
    first_received_at  REAL NOT NULL,
    last_received_at   REAL NOT NULL,
    last_activity_at   REAL NOT NULL,  -- last instance, touch or release of an association carrying it
    duplicates         INTEGER NOT NULL DEFAULT 0,
    completed_at       REAL,           -- NULL while the completion timer still watches the study
    watch_from         REAL,           -- start of the current completion window (max wait counts from it)
    quiet_seconds      REAL            -- a routing rule's quiet period for this study (NULL: the config's)
);
CREATE INDEX studies_by_received ON studies (last_received_at);
-- The completion timer's tick reads the studies not yet complete, a handful among thousands.
CREATE INDEX studies_open ON studies (first_received_at) WHERE completed_at IS NULL;
CREATE TABLE deleting (
    study_instance_uid TEXT PRIMARY KEY,  -- out of service: retention is deleting it (node.store.retention)
    reason             TEXT NOT NULL,     -- "age" or "disk"
    instances          INTEGER NOT NULL,  -- what it held when marked, for the audit record
    bytes              INTEGER NOT NULL,
    marked_at          REAL NOT NULL
);
-- The studies open associations carry, of every receiver process (node.store.associations): cleared at
-- the node's start, and rows of a pid that is not alive are ignored.
CREATE TABLE carrying (
    association_id     TEXT NOT NULL,     -- unique within its process
    pid                INTEGER NOT NULL,  -- the receiver process that has the association open
    study_instance_uid TEXT NOT NULL,
    PRIMARY KEY (association_id, pid, study_instance_uid)
);
CREATE INDEX carrying_by_study ON carrying (study_instance_uid);
"""

COLUMNS = (
    "sop_instance_uid, study_instance_uid, series_instance_uid, sop_class_uid, transfer_syntax_uid, "
    "path, size, calling_ae, received_at, association_id, called_ae, source_address"
)

# Statements that take schema version N - 1 to N (version 0 is a new file: SCHEMA at once).
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE studies ADD COLUMN watch_from REAL",),
    3: (
        "ALTER TABLE instances ADD COLUMN called_ae TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE instances ADD COLUMN source_address TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE studies ADD COLUMN quiet_seconds REAL",
    ),
    # Retention's markers, and instances rebuilt with rowids that are never reused (rowids kept).
    4: (
        "CREATE TABLE deleting (study_instance_uid TEXT PRIMARY KEY, reason TEXT NOT NULL,"
        " instances INTEGER NOT NULL, bytes INTEGER NOT NULL, marked_at REAL NOT NULL)",
        "CREATE TABLE instances_4 (id INTEGER PRIMARY KEY AUTOINCREMENT, sop_instance_uid TEXT NOT NULL UNIQUE,"
        " study_instance_uid TEXT NOT NULL, series_instance_uid TEXT NOT NULL, sop_class_uid TEXT NOT NULL,"
        " transfer_syntax_uid TEXT NOT NULL, path TEXT NOT NULL, size INTEGER NOT NULL, calling_ae TEXT NOT NULL,"
        " received_at REAL NOT NULL, association_id TEXT NOT NULL, called_ae TEXT NOT NULL DEFAULT '',"
        " source_address TEXT NOT NULL DEFAULT '')",
        "INSERT INTO instances_4 SELECT rowid, sop_instance_uid, study_instance_uid, series_instance_uid,"
        " sop_class_uid, transfer_syntax_uid, path, size, calling_ae, received_at, association_id, called_ae,"
        " source_address FROM instances ORDER BY rowid",
        "DROP TABLE instances",
        "ALTER TABLE instances_4 RENAME TO instances",
        "CREATE INDEX instances_by_series ON instances (study_instance_uid, series_instance_uid)",
    ),
    # The completion timer's tick scanned every study (bench/index_scale.py).
    5: ("CREATE INDEX studies_open ON studies (first_received_at) WHERE completed_at IS NULL",),
    # Open associations move from process memory to the database: several receiver processes share it.
    6: (
        "CREATE TABLE carrying (association_id TEXT NOT NULL, pid INTEGER NOT NULL, study_instance_uid TEXT NOT NULL,"
        " PRIMARY KEY (association_id, pid, study_instance_uid))",
        "CREATE INDEX carrying_by_study ON carrying (study_instance_uid)",
    ),
}


@dataclass(frozen=True)
class Instance:
    """One row of the index."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    path: str
    size: int
    calling_ae: str
    received_at: float
    association_id: str
    called_ae: str = ""
    source_address: str = ""


@dataclass(frozen=True)
class Recorded:
    """What :meth:`Index.record` did.

    Attributes
    ----------
    new : bool
        ``True`` for a first arrival, ``False`` for a duplicate SOP Instance UID (counted per study).
    late : bool
        The study had already been marked complete; the caller applies its late-instance policy.
    received_at : float
        The arrival time written in the row (the index's clock).
    """

    new: bool
    late: bool
    received_at: float = 0.0

    @property
    def duplicate(self) -> bool:
        return not self.new


@dataclass(frozen=True)
class StudySummary:
    """Counts and times of one study; times come from the index's clock."""

    study_instance_uid: str
    instances: int
    series: int
    first_received_at: float
    last_received_at: float
    duplicates: int
    completed_at: float | None


@dataclass(frozen=True)
class Deletion:
    """A study retention has taken out of service (a committed row of ``deleting``) and not yet deleted.

    Attributes
    ----------
    study_instance_uid : str
        The study.
    reason : str
        ``"age"`` (older than ``retention.keep_days``) or ``"disk"`` (free space below the target).
    instances, bytes : int
        Its instances and their spool bytes when it was marked.
    marked_at : float
        When it was marked (the index's clock).
    """

    study_instance_uid: str
    reason: str
    instances: int
    bytes: int
    marked_at: float
