"""The source slices' headers as the result objects need them.

Patient and study attributes of a SEG, SR or SC are copied from the source images, and highdicom reads
each one by attribute access: a source that simply omits a Type 2 attribute (no Patient's Birth Date, no
Accession Number: common in exports and from older modalities) would make every result impossible to
create, and retrying would never help. Type 2 means "present, may be empty", so an omitted one is added
empty, which is what the source should have sent. Values are never invented or logged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

# Type 2 attributes of the Patient and General Study modules (PS3.3 C.7.1.1, C.7.2.1), which every
# result object copies from its source, and General Series / General Equipment ones highdicom reads.
TYPE2_COPIED = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def complete_type2(headers: Sequence[Dataset]) -> list[str]:
    """Add the omitted :data:`TYPE2_COPIED` attributes, empty, to each header in place; return their names.

    Only in-memory headers change (the spool keeps the files as received).
    """
    added: set[str] = set()
    for header in headers:
        for keyword in TYPE2_COPIED:
            if keyword not in header:
                setattr(header, keyword, "")
                added.add(keyword)
    if added:
        log.info("source lacks Type 2 attributes %s: written empty in the results", ", ".join(sorted(added)))
    return sorted(added)
