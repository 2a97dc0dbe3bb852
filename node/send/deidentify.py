"""De-identification on the way out: PS3.15 Annex E Basic Application Level Confidentiality Profile, per peer.

A peer with ``deidentify`` in the config (:class:`node.config.deid.Deidentify`) gets every instance we send
it (forwards and results) de-identified in memory: :func:`deidentified` reads the stored file (decoded
first with :func:`node.send.transcode.decode_to` when the peer needs an uncompressed syntax), applies the
profile and returns the dataset the SCU sends. The stored file is never written to, and the send job keeps
the original SOP Instance UID (the one the SCU reports).

The library: **dicom-anonymizer** (KitwareMedical, BSD, depends on pydicom only). It carries PS3.15
Table E.1-1, Basic Profile column, as data regenerated from the standard for each of its releases (we use
the 2026c edition) and maps each action code to a function: D replace with a dummy, Z empty (dates become
``00010101``, times ``000000.00``), X remove (a date becomes ``00010101``: the library keeps dates present
so that viewers do not fail, as E.3.6 allows), K keep, U replace UIDs; an ambiguous X/Z/D takes the choice
that keeps any IOD valid (D), X/Z takes Z. Private attributes are removed. The two candidates the issue
named were read and set aside, because using either would mean writing Table E.1-1 ourselves:

- dicognito 0.19 replaces every PN, UI and date and a list of identifiers chosen by its author (who says it
  was not built from Table E.1-1, dicognito#143): descriptions, comments, ages, weights, free text and
  private attributes stay.
- deid (pydicom/deid 0.4) is a recipe engine; its default recipe is not the profile (it removes every
  ``*UID``, ``*ID`` and ``*Date``, which breaks instances), so the profile would be our own recipe.

What this module adds to the library (each a few lines, on top of its table and action functions):

- **UIDs** (``uids``): ``remap`` replaces every UID the table marks U (and the D-marked Annotation Group
  UID) with ``2.25.<128 bits of HMAC-SHA256(salt, original)>``: the same original gives the same new UID
  in every instance, process and restart, so a study's series, frames of reference and references stay
  consistent, and another salt gives other UIDs. (The library's own U action draws random UIDs into a
  process-wide dictionary that grows forever: it is never called.) ``retain``: Retain UIDs Option (K).
- **Dates** (``dates``): ``remove`` is the profile's own action; ``shift`` (Retain Longitudinal Temporal
  Information with Modified Dates Option) moves every DA and DT the table lists back by 1..``max_shift_days``
  days, a number drawn from HMAC(salt, patient): the same for every instance of a patient, so intervals
  are kept; times and Timezone Offset From UTC stay (a whole-day shift). ``retain``: Full Dates Option (K:
  dates, times and Timezone Offset From UTC as they are). Patient's Birth Date and Time follow the profile
  under every choice (no option retains them). A partial or malformed date that cannot be shifted gets the
  profile's action.
- **Patient ID and Patient's Name** are replaced by one pseudonym, ``pseudonym_prefix`` + 16 base32
  characters of HMAC(salt, Patient ID and its issuer) (Study Instance UID when there is no Patient ID):
  the same patient gets the same pseudonym on every send.
- **Sequences**: the library applies its table to the top level only. A sequence the table keeps (or does
  not list) is *cleaned*, as the K action says: the profile is applied to its items, at any depth, so
  UIDs in reference and functional group sequences are remapped like the top-level ones. X/Z/U* sequences
  (Referenced Image, Source Image) are kept and cleaned, which replaces the UIDs they hold (U*). A sequence
  marked D (Content Sequence, ...) has every value in its items replaced by the library's dummies, with
  UIDs remapped by the rule above and class UIDs kept.
- **Marking**: Patient Identity Removed ``YES``; De-identification Method (text) and De-identification
  Method Code Sequence (CID 7050: 113100 Basic Application Confidentiality Profile, plus 113110 Retain
  UIDs Option, 113106 Retain Longitudinal Temporal Information Full Dates Option or 113107 ... Modified
  Dates Option; items already there are kept); Longitudinal Temporal Information Modified ``REMOVED``,
  ``MODIFIED`` or ``UNMODIFIED``.

Not done (no option of the profile is claimed for them): pixel data is not cleaned, so an instance whose
Burned In Annotation is ``YES`` is refused (:class:`DeidentifyError`: the job is parked, a person decides);
structured content is not cleaned (an SR's Content Sequence is replaced by dummies, as D says).
"""

from __future__ import annotations

import base64
import datetime
import functools
import hashlib
import hmac
import uuid
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

from dicomanonymizer import simpledicomanonymizer as _library  # type: ignore[import-untyped]
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from pydicom.uid import UID

from node.config.deid import Deidentify
from node.send.errors import SendError
from node.send.transcode import decode_to

__all__ = ["TABLE", "Deidentifier", "DeidentifyError", "deidentified", "deidentifier"]

TABLE = "dicomfields_2026c"  # the library's copy of PS3.15 Table E.1-1: the 2026c edition of the standard

Tag = tuple[int, ...]  # the library's keys: (group, element), or (group, element, group mask, element mask)
Action = Callable[[Dataset, Tag], None]

_BIRTH = {(0x0010, 0x0030), (0x0010, 0x0032)}  # Patient's Birth Date and Time: no option retains them
_UTC_OFFSET = (0x0008, 0x0201)  # Timezone Offset From UTC (SH): X, but K or C under the date options
_PATIENT_ID = (0x0010, 0x0020)
_PATIENT_NAME = (0x0010, 0x0010)
# D, Z/D, X/D and X/Z/D: the library replaces (D) whenever D is one of the choices.
_REPLACE = {
    _library.replace,
    _library.empty_or_replace,
    _library.delete_or_replace,
    _library.delete_or_empty_or_replace,
}
_UID_ACTIONS = {_library.replace_UID, _library.replace}
_LONGITUDINAL = {"remove": "REMOVED", "shift": "MODIFIED", "retain": "UNMODIFIED"}


class DeidentifyError(SendError):
    """An instance cannot be de-identified for the peer (burned-in annotation, unreadable, a library error).

    Another try cannot help: the send job is parked with this message.
    """


def _vr(tag: Tag) -> str:
    try:
        return str(dictionary_VR(tag[:2])) if len(tag) == 2 else ""
    except KeyError:
        return ""


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, MultiValue | list) else [value]


def _shifted(value: str, days: int) -> str | None:
    """A DA or DT value ``days`` days earlier (time and offset kept), or ``None`` if it has no full date."""
    head = value[:8]
    if len(head) < 8 or not head.isdigit():
        return None
    try:
        day = datetime.date(int(head[:4]), int(head[4:6]), int(head[6:])) - datetime.timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    return f"{day.year:04d}{day.month:02d}{day.day:02d}{value[8:]}"


class Deidentifier:
    """The profile with the options of one peer's ``deidentify``; :meth:`__call__` changes a dataset in place.

    Holds no state that changes: one instance serves every sender thread.
    """

    def __init__(self, settings: Deidentify) -> None:
        self.settings = settings
        self._key = settings.salt.get_secret_value().encode()
        table: dict[Tag, Action] = _library.initialize_actions(TABLE)
        self._uid_tags = {tag for tag, action in table.items() if _vr(tag) == "UI" and action in _UID_ACTIONS}
        dated = {tag for tag in table if _vr(tag) in ("DA", "DT", "TM") or tag == _UTC_OFFSET}
        self._date_tags = dated - _BIRTH
        self._rules = dict(table)
        self._groups = [tag for tag in table if len(tag) == 4]  # repeating groups: curves, overlays
        for tag, action in table.items():
            vr = _vr(tag)
            if tag in self._uid_tags:
                self._rules[tag] = self._uid_action(action) if settings.uids == "remap" else _library.keep
            elif action is _library.delete_or_empty_or_replace_UID:  # X/Z/U*: kept, items cleaned (UIDs: U)
                self._rules[tag] = _library.keep
            elif vr == "SQ" and action in _REPLACE:
                self._rules[tag] = self._replace_items_action(action)
            elif tag in self._date_tags and settings.dates == "retain":
                self._rules[tag] = _library.keep
        method = f"PS3.15 Basic Profile (dicom-anonymizer {version('dicom-anonymizer')}, {TABLE[-5:]})"
        self.method = method[:64]
        self.codes = [codes.DCM.BasicApplicationConfidentialityProfile]
        if settings.uids == "retain":
            self.codes.append(codes.DCM.RetainUidsOption)
        if settings.dates == "retain":
            self.codes.append(codes.DCM.RetainLongitudinalTemporalInformationFullDatesOption)
        elif settings.dates == "shift":
            self.codes.append(codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption)

    # -- derived values ------------------------------------------------------------------------------------

    def _mac(self, kind: str, value: str) -> bytes:
        return hmac.new(self._key, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """The UID that replaces ``original``: ``2.25.`` and 128 bits of HMAC(salt, original), as a UUID."""
        return f"2.25.{uuid.UUID(bytes=self._mac('uid', original)[:16], version=4).int}"

    @staticmethod
    def patient_key(ds: Dataset) -> str:
        """Who the instance is about: Patient ID and its issuer, else the study (no ID to link patients by)."""
        patient_id = str(ds.get("PatientID", "") or "").strip()
        if patient_id:
            return f"patient\0{patient_id}\0{str(ds.get('IssuerOfPatientID', '') or '').strip()}"
        return f"study\0{ds.get('StudyInstanceUID', '') or ds.get('SOPInstanceUID', '')}"

    def pseudonym(self, patient_key: str) -> str:
        """``pseudonym_prefix`` and 16 base32 characters (80 bits) of HMAC(salt, patient)."""
        code = base64.b32encode(self._mac("pseudonym", patient_key)[:10]).decode()
        return f"{self.settings.pseudonym_prefix}{code}"

    def shift_days(self, patient_key: str) -> int:
        """Days the patient's dates move back with ``dates = "shift"``: 1..``max_shift_days``."""
        draw = int.from_bytes(self._mac("date-shift", patient_key)[:8], "big")
        return 1 + draw % self.settings.max_shift_days

    # -- actions: (dataset, tag) -> None, as the library's -------------------------------------------------

    def _uid_action(self, fallback: Action) -> Action:
        def remap(ds: Dataset, tag: Tag) -> None:
            elem = ds.get((tag[0], tag[1]))
            if elem is None or elem.VR != "UI":
                if elem is not None:
                    fallback(ds, tag)
                return
            new = [self.uid(str(v)) if v else v for v in _values(elem.value)]
            elem.value = new if len(new) > 1 else new[0]

        return remap

    def _shift_action(self, days: int, fallback: Action) -> Action:
        def shift(ds: Dataset, tag: Tag) -> None:
            elem = ds.get((tag[0], tag[1]))
            if elem is None or elem.VR in ("TM", "SH") or not elem.value:
                return  # times and the offset from UTC stay: the shift is whole days
            new = [_shifted(str(v), days) for v in _values(elem.value)] if elem.VR in ("DA", "DT") else [None]
            if any(v is None for v in new):
                fallback(ds, tag)  # no full date to shift: the profile's own action
            else:
                elem.value = new if len(new) > 1 else new[0]

        return shift

    def _replace_items_action(self, fallback: Action) -> Action:
        """D on a sequence: every value in its items replaced by the library's dummy; UIDs remapped (U)."""

        def replace_items(ds: Dataset, tag: Tag) -> None:
            elem = ds.get((tag[0], tag[1]))
            if elem is None or elem.VR != "SQ":
                if elem is not None:
                    fallback(ds, tag)
                return
            for item in elem.value:
                self._replace_values(item)

        return replace_items

    def _replace_values(self, item: Dataset) -> None:
        for elem in list(item):
            if elem.VR == "SQ":
                for nested in elem.value:
                    self._replace_values(nested)
            elif elem.VR == "UI":  # instance UIDs as everywhere else; class and coding scheme UIDs kept
                if (elem.tag.group, elem.tag.element) in self._uid_tags and self.settings.uids == "remap":
                    self._uid_action(_library.keep)(item, (elem.tag.group, elem.tag.element))
            else:
                try:
                    _library.replace_element(elem)
                except NotImplementedError:  # a VR without a dummy in the library (AT, OW, OF, ...): removed
                    del item[elem.tag]

    # -- the whole dataset ---------------------------------------------------------------------------------

    def rules(self, ds: Dataset) -> dict[Tag, Action]:
        """The actions for one instance: the table with our options, and this patient's pseudonym and shift."""
        key = self.patient_key(ds)
        rules = dict(self._rules)
        pseudonym = _library.replace_with_value([self.pseudonym(key)])
        rules[_PATIENT_ID] = rules[_PATIENT_NAME] = pseudonym
        if self.settings.dates == "shift":
            days = self.shift_days(key)
            for tag in self._date_tags:
                rules[tag] = self._shift_action(days, self._rules[tag])
        return rules

    def __call__(self, ds: Dataset) -> None:
        """De-identify ``ds`` (and its file meta) in place.

        Raises
        ------
        DeidentifyError
            Burned In Annotation is ``YES`` (pixel data is not cleaned), or the library failed on the dataset.
        """
        if str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
            raise DeidentifyError(
                "its Burned In Annotation is YES and the Basic Profile does not clean pixel data: "
                "not sent de-identified"
            )
        rules = self.rules(ds)
        try:
            for _ in ds.iterall():  # parse every raw element now: the library edits elements in place
                pass
            self._clean(ds, rules, set())
        except Exception as exc:  # the library raises assorted errors on unexpected values
            raise DeidentifyError(f"de-identification failed: {type(exc).__name__}: {exc}") from exc
        for tag in [elem.tag for elem in ds if elem.tag.element == 0]:  # group lengths (retired) no longer add up
            del ds[tag]
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = self.method
        items = list(ds.get("DeidentificationMethodCodeSequence", []))
        present = {(str(item.get("CodeValue", "")), str(item.get("CodingSchemeDesignator", ""))) for item in items}
        for code in self.codes:
            if (code.value, code.scheme_designator) not in present:
                item = Dataset()
                item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code.value, "DCM", code.meaning
                items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        ds.LongitudinalTemporalInformationModified = _LONGITUDINAL[self.settings.dates]

    def _clean(self, ds: Dataset, rules: dict[Tag, Action], seen: set[int]) -> None:
        """The library's profile on ``ds``, then on the items of every sequence it kept, at any depth.

        The library is given only the rules of the attributes ``ds`` holds: it looks up every rule it is
        given and walks the whole dataset for each repeating-group rule (curves, overlays), which made a
        29-frame SEG take 0.7 s instead of 17 ms. An item is cleaned once even where one item object sits
        in several sequences (highdicom builds SEGs so in memory; a dataset read from a file never does):
        a second pass would remap its UIDs again.
        """
        if id(ds) in seen:
            return
        seen.add(id(ds))
        held = [(e.tag.group, e.tag.element) for e in ds]
        meta = getattr(ds, "file_meta", None)  # the library applies the group 0002 rules to the file meta
        held += [(e.tag.group, e.tag.element) for e in meta] if meta is not None else []
        mine: dict[Tag, Action] = {tag: rules[tag] for tag in held if tag in rules}
        for tag in self._groups:  # (group, element, group mask, element mask)
            if any(g & tag[2] == tag[0] & tag[2] and e & tag[3] == tag[1] & tag[3] for g, e in held):
                mine[tag] = rules[tag]
        _library.anonymize_dataset(ds, base_rules_gen=lambda: mine, delete_private_tags=True)
        for elem in ds:
            if elem.VR == "SQ" and rules.get((elem.tag.group, elem.tag.element), _library.keep) is _library.keep:
                for item in elem.value:
                    self._clean(item, rules, seen)


@functools.cache
def deidentifier(settings: Deidentify) -> Deidentifier:
    """The :class:`Deidentifier` of a peer's settings, built once per process (the table is read once)."""
    return Deidentifier(settings)


def deidentified(path: Path, settings: Deidentify, transfer_syntax: UID | None = None) -> Dataset:
    """The instance in ``path`` de-identified in memory; the file is left untouched.

    Parameters
    ----------
    path
        A Part-10 file.
    settings
        The peer's ``deidentify``.
    transfer_syntax
        ``None``: the dataset is read as stored (the peer accepted the stored syntax; compressed pixel data
        stays compressed). Explicit or Implicit VR Little Endian: decoded first by
        :func:`~node.send.transcode.decode_to`.

    Raises
    ------
    DeidentifyError
        The file cannot be read, or :class:`Deidentifier` refused or failed.
    TranscodeError
        Decoding for ``transfer_syntax`` failed.
    OSError
        Reading the file failed (``FileNotFoundError`` when it is gone).
    """
    if transfer_syntax is not None:
        ds = decode_to(path, transfer_syntax)
    else:
        try:
            ds = dcmread(path)
        except OSError:
            raise
        except Exception as exc:  # pydicom raises assorted errors on a damaged file
            raise DeidentifyError(f"file {path} cannot be read: {type(exc).__name__}: {exc}") from exc
    try:
        deidentifier(settings)(ds)
    except DeidentifyError as exc:
        raise DeidentifyError(f"file {path}: {exc}") from exc
    return ds
