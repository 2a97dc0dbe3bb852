"""What a batch of files proposes to the peer, and how the batch is split into associations.

- :func:`inspect` reads only each file's meta information (SOP Class and Instance UID, transfer syntax);
  a file whose meta cannot be read (missing, not Part-10, unreadable, incomplete) gets its outcome at once.
- :func:`presentation_contexts`: per SOP class, one presentation context per transfer syntax the files
  are stored in, plus one for Explicit and one for Implicit VR Little Endian. One syntax per context lets
  the peer accept each one it supports (an acceptor picks a single syntax per context), so a batch mixing
  compressed and uncompressed files needs no conversion.
- :func:`groups`: at most :data:`MAX_CONTEXTS` (128) contexts fit in one association; a batch needing more
  is split, in order, into groups that are sent over several associations, one after the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.presentation import PresentationContext

from node.send.outcomes import FileOutcome, Verdict

__all__ = ["MAX_CONTEXTS", "UNCOMPRESSED_LE", "Item", "groups", "inspect", "presentation_contexts"]

MAX_CONTEXTS = 128  # presentation contexts in one A-ASSOCIATE-RQ (odd ids 1..255)
# Proposed for every SOP class, in this order of preference: what we can decode any file to.
UNCOMPRESSED_LE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass(frozen=True, slots=True)
class Item:
    """A file to send, with what its meta information says."""

    index: int
    path: Path
    sop_class: UID
    sop_instance: UID
    transfer_syntax: UID


def inspect(index: int, path: Path) -> Item | FileOutcome:
    """The file's UIDs and transfer syntax from its meta information, or why it cannot be sent."""

    def park(why: str) -> FileOutcome:
        return FileOutcome(index, path, Verdict.PARK, None, why)

    try:
        meta = read_file_meta_info(path)
    except FileNotFoundError:
        return park(f"file {path} is missing (deleted or moved after the send was queued); restore it or drop the job")
    except InvalidDicomError:
        return park(f"file {path} is not a DICOM Part-10 file (no 'DICM' header): it cannot be sent")
    except OSError as exc:
        return FileOutcome(index, path, Verdict.RETRY, None, f"file {path} cannot be read: {exc.strerror or exc}")
    except Exception as exc:  # pydicom raises assorted errors on a damaged file meta
        return park(f"file {path}: its DICOM file meta cannot be read ({type(exc).__name__}: {exc})")
    values = {k: str(meta.get(k, "") or "").strip() for k in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID")}
    syntax = str(meta.get("TransferSyntaxUID", "") or "").strip()
    missing = [keyword for keyword, value in {**values, "TransferSyntaxUID": syntax}.items() if not value]
    if missing:
        return park(f"file {path}: its file meta lacks {', '.join(missing)}; it cannot be sent as it is")
    sop_class, sop_instance = values["MediaStorageSOPClassUID"], values["MediaStorageSOPInstanceUID"]
    return Item(index, path, UID(sop_class), UID(sop_instance), UID(syntax))


def _syntaxes(pairs: Iterable[tuple[str, str]]) -> dict[UID, list[UID]]:
    """Per SOP class, the transfer syntaxes to propose (each in its own context), in order of appearance."""
    wanted: dict[UID, list[UID]] = {}
    for sop_class, syntax in pairs:
        proposed = wanted.setdefault(UID(sop_class), [])
        if UID(syntax) not in UNCOMPRESSED_LE and UID(syntax) not in proposed:
            proposed.append(UID(syntax))
    for proposed in wanted.values():
        proposed.extend(UNCOMPRESSED_LE)
    return wanted


def presentation_contexts(pairs: Iterable[tuple[str, str]]) -> list[PresentationContext]:
    """The contexts proposed for files of these (SOP Class UID, transfer syntax UID) pairs.

    One context per SOP class and syntax: each stored syntax that is not uncompressed little endian,
    then Explicit VR Little Endian, then Implicit VR Little Endian.
    """
    return [
        build_context(sop_class, [syntax]) for sop_class, syntaxes in _syntaxes(pairs).items() for syntax in syntaxes
    ]


def groups(items: Sequence[Item]) -> list[list[Item]]:
    """``items`` in order, split so that each group's contexts fit in one association."""
    split: list[list[Item]] = []
    current: list[Item] = []
    proposed: dict[UID, set[UID]] = {}  # per SOP class, the stored syntaxes needing their own context

    def extra(item: Item) -> int:  # contexts ``item`` adds to the current group
        own = 0 if item.transfer_syntax in UNCOMPRESSED_LE else 1
        if item.sop_class not in proposed:
            return len(UNCOMPRESSED_LE) + own
        return own if item.transfer_syntax not in proposed[item.sop_class] else 0

    contexts = 0
    for item in items:
        if current and contexts + extra(item) > MAX_CONTEXTS:
            split.append(current)
            current, contexts = [], 0
            proposed.clear()
        contexts += extra(item)
        syntaxes = proposed.setdefault(item.sop_class, set())
        if item.transfer_syntax not in UNCOMPRESSED_LE:
            syntaxes.add(item.transfer_syntax)
        current.append(item)
    if current:
        split.append(current)
    return split
