"""DIMSE status codes by name (PS3.4 Annex B for C-STORE, PS3.7 Annex C for the general ones).

Handlers and the sender use these names only; a bare ``0xA700`` in the code is a review finding.

C-STORE statuses the node's SCP returns (see :mod:`node.receive.store_handler`):

================================  ======  =============================================================
name                              value   when
================================  ======  =============================================================
SUCCESS                           0x0000  the instance is durable (file fsynced and renamed, index row
                                          committed), or it was a duplicate under ``keep-first``
OUT_OF_RESOURCES                  0xA700  free disk below ``min_free_disk_mb``, a write or commit failed
                                          (the sender should retry later)
DATASET_DOES_NOT_MATCH_SOP_CLASS  0xA900  the dataset's SOP Class UID differs from the request's
CANNOT_UNDERSTAND                 0xC000  the dataset cannot be parsed (truncated, bad lengths, elements out
                                          of tag order)
CANNOT_UNDERSTAND_MISSING_UID     0xC001  Study, Series or SOP Instance UID missing or empty
CANNOT_UNDERSTAND_UID_MISMATCH    0xC002  the dataset's SOP Instance UID differs from the request's
CANNOT_UNDERSTAND_INVALID_UID     0xC003  a UID that is not a valid UID (it would not make a file name)
SOP_CLASS_NOT_SUPPORTED           0x0122  the C-STORE came on a presentation context that is not a storage one
PROCESSING_FAILURE                0x0110  an unexpected error in the node (a bug; logged with traceback)
================================  ======  =============================================================
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """DIMSE status values the node sends or interprets."""

    SUCCESS = 0x0000
    # Warnings (C-STORE): the peer stored the instance but changed something.
    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
    # Failures.
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000
    CANNOT_UNDERSTAND_MISSING_UID = 0xC001
    CANNOT_UNDERSTAND_UID_MISMATCH = 0xC002
    CANNOT_UNDERSTAND_INVALID_UID = 0xC003
    PROCESSING_FAILURE = 0x0110
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    NOT_AUTHORIZED = 0x0124


def is_success(value: int) -> bool:
    """Success or a warning (0x0001, 0xB000-0xBFFF): the peer has the instance."""
    return value == Status.SUCCESS or value == 0x0001 or 0xB000 <= value <= 0xBFFF


def describe(value: int) -> str:
    """``0xA700 OUT_OF_RESOURCES`` (or the category for codes without a name here)."""
    try:
        name = Status(value).name
    except ValueError:
        if 0xA700 <= value <= 0xA7FF:
            name = "out of resources"
        elif 0xA900 <= value <= 0xA9FF:
            name = "dataset does not match SOP class"
        elif 0xC000 <= value <= 0xCFFF:
            name = "cannot understand"
        elif 0xB000 <= value <= 0xBFFF:
            name = "warning"
        else:
            name = "failure"
    return f"0x{value:04X} {name}"
