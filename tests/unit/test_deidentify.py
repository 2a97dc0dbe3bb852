"""De-identification (node.send.deidentify, node.config.deid) on real datasets, attribute by attribute.

Every attribute of pydicom's CT_small.dcm and MR_small.dcm and of tests.helpers.tiny_ct is checked against
the action PS3.15 Table E.1-1 (2026c), Basic Profile column, gives it (written out below by hand from the
standard, and compared with the library's copy of the table): D replaced by a dummy, Z emptied (or a
dummy), X removed, U replaced by a consistent UID, the ambiguous X/Z, X/D, Z/D, X/Z/D by one of theirs, K
(and every attribute the table does not list) unchanged; private attributes removed. Then the options:
UIDs retained, dates shifted or retained, and the pseudonyms; consistency across instances, objects,
processes and salts; nested sequences; the marking of the result; the config keys.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from dicomanonymizer import simpledicomanonymizer as library
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian

from node.config import parse_config
from node.config.deid import Deidentify
from node.errors import ConfigError
from node.send.deidentify import TABLE, Deidentifier, DeidentifyError, deidentified
from tests.helpers import tiny_ct

SALT = "unit-test-salt-0123456789"
CT_SMALL = Path(get_testdata_file("CT_small.dcm", download=False))
MR_SMALL = Path(get_testdata_file("MR_small.dcm", download=False))
MR_JPEG_LS = Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm", download=False))
P1 = "patient\x00P1\x00"  # the patient key of Patient ID P1 without an issuer
STUDY, SERIES = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.1.1"

# PS3.15 Table E.1-1 (2026c), Basic Profile column, for every listed attribute the test datasets hold.
PROFILE = {
    "MediaStorageSOPInstanceUID": "U",
    "SOPInstanceUID": "U",
    "StudyInstanceUID": "U",
    "SeriesInstanceUID": "U",
    "FrameOfReferenceUID": "U",
    "InstanceCreatorUID": "U",
    "PatientName": "Z",
    "PatientID": "Z/D",
    "PatientBirthDate": "Z",
    "PatientSex": "Z",
    "PatientAge": "X",
    "PatientSize": "X",
    "PatientWeight": "X",
    "OtherPatientIDsSequence": "X",
    "AdditionalPatientHistory": "X",
    "InstitutionName": "X/Z/D",
    "ReferringPhysicianName": "Z",
    "NameOfPhysiciansReadingStudy": "X",
    "OperatorsName": "X/Z/D",
    "AccessionNumber": "Z",
    "StudyID": "Z",
    "StationName": "X/Z/D",
    "DeviceSerialNumber": "X/Z/D",
    "StudyDescription": "X",
    "ImageComments": "X",
    "ContrastBolusAgent": "Z/D",
    "TimezoneOffsetFromUTC": "X",
    "DataSetTrailingPadding": "X",
    "StudyDate": "Z",
    "StudyTime": "Z",
    "SeriesDate": "X/D",
    "SeriesTime": "X/D",
    "AcquisitionDate": "X/Z",
    "AcquisitionTime": "X/Z",
    "ContentDate": "Z/D",
    "ContentTime": "Z/D",
    "InstanceCreationDate": "X/D",
    "InstanceCreationTime": "X/Z/D",
}
# The library's action functions by the code of the standard they implement.
CODES = {
    library.replace: "D",
    library.empty: "Z",
    library.delete: "X",
    library.replace_UID: "U",
    library.empty_or_replace: "Z/D",
    library.delete_or_empty: "X/Z",
    library.delete_or_replace: "X/D",
    library.delete_or_empty_or_replace: "X/Z/D",
    library.delete_or_empty_or_replace_UID: "X/Z/U*",
}
# The library's dummies (D) and empty values (Z): dates and times stay present, as E.3.6 allows.
DUMMY = {"DA": "00010101", "TM": "000000.00", "DT": "00010101010101.000000+0000"}
ADDED = {"PatientIdentityRemoved", "DeidentificationMethod", "DeidentificationMethodCodeSequence"}
ADDED.add("LongitudinalTemporalInformationModified")
BIRTH = {"PatientBirthDate", "PatientBirthTime"}


def settings(**keys: Any) -> Deidentify:
    return Deidentify.model_validate({"salt": SALT, **keys})


def key(keyword: str) -> tuple[int, int]:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return tag >> 16, tag & 0xFFFF


def table() -> dict[tuple[int, ...], Any]:
    return library.initialize_actions(TABLE)  # type: ignore[no-any-return]


def sample(name: str) -> Dataset:
    if name == "tiny_ct":
        ds = tiny_ct(STUDY, SERIES, SERIES + ".1")
        ds.StudyDate, ds.StudyTime, ds.ContentDate = "20240315", "101500", "20240316"
        return ds
    return dcmread(CT_SMALL if name == "CT_small" else MR_SMALL)


def run(ds: Dataset, deid: Deidentifier) -> Dataset:
    out = copy.deepcopy(ds)  # Dataset.copy() shares the elements, which the library changes in place
    deid(out)
    return out


def text(elem: DataElement | None) -> str | None:
    if elem is None:
        return None
    value = elem.value
    return "\\".join(str(v) for v in value) if isinstance(value, list) else ("" if value is None else str(value))


def expected(code: str, vr: str, before: DataElement, after: DataElement | None, deid: Deidentifier) -> str:
    """Why ``after`` breaks ``code`` (empty when it keeps it). Z and D dummies are the library's."""
    value, dummy, empty = text(after), DUMMY.get(vr, "ANONYMIZED"), DUMMY.get(vr, "")
    if code == "U":
        original = text(before) or ""
        good = value == deid.uid(original) and value != original and UID(value or "").is_valid
        return "" if good else f"{value!r} is not the remapped UID of {original}"
    allowed: dict[str, tuple[str | None, ...]] = {
        "X": (None, DUMMY["DA"]) if vr == "DA" else (None,),  # the library keeps a removed date as 00010101
        "Z": (empty,),
        "D": (dummy,),
        "Z/D": (empty, dummy),
        "X/Z": (None, empty),
        "X/D": (None, dummy),
        "X/Z/D": (None, empty, dummy),
    }
    return "" if value in allowed[code] else f"{value!r} is not one of {allowed[code]}"


def shifted(value: str, days: int) -> str:
    if not value:
        return value
    day = datetime.datetime.strptime(value[:8], "%Y%m%d") - datetime.timedelta(days)
    return day.strftime("%Y%m%d") + value[8:]


def check_profile(
    before: Dataset, after: Dataset, deid: Deidentifier, dates: str = "remove", *, meta: bool = True
) -> list[str]:
    """Every attribute of ``before`` (and of its file meta with ``meta``: a C-STORE carries none) against the
    profile: one line per problem."""
    problems = []
    patient = Deidentifier.patient_key(before)
    rows = [(e, after.file_meta.get(e.tag)) for e in before.file_meta] if meta else []
    rows += [(e, after.get(e.tag)) for e in before]
    for elem, out in rows:
        name = elem.keyword or str(elem.tag)
        code = PROFILE.get(name, "K")
        unchanged = "" if out is not None and out.value == elem.value else f"{text(elem)!r} became {text(out)!r}"
        dated = elem.VR in ("DA", "DT", "TM") or name == "TimezoneOffsetFromUTC"
        if elem.tag.is_private:
            why = "" if out is None else "private attribute kept"
        elif code == "K":  # not in the table
            why = unchanged
        elif name in ("PatientName", "PatientID"):  # Z and Z/D: our pseudonym is the dummy
            why = "" if text(out) == deid.pseudonym(patient) else f"{text(out)!r} is not the pseudonym"
        elif dates != "remove" and dated and name not in BIRTH:
            if dates == "retain" or elem.VR in ("TM", "SH"):  # retained; a whole-day shift keeps times
                why = unchanged
            else:
                want = shifted(text(elem) or "", deid.shift_days(patient))
                why = "" if text(out) == want else f"{text(elem)!r} became {text(out)!r}, not {want!r}"
        elif code == "U" and deid.settings.uids == "retain":
            why = unchanged
        else:
            why = expected(code, elem.VR, elem, out, deid)
        if why:
            problems.append(f"{name} ({code}): {why}")
    return problems


# -- the library's table is the standard's --------------------------------------------------------------------


def test_the_library_table_gives_the_basic_profile_action_of_every_attribute_in_the_samples() -> None:
    actions = table()
    listed = {
        keyword_for_tag(e.tag)
        for name in ("CT_small", "MR_small", "tiny_ct")
        for ds in [sample(name)]
        for e in [*ds.file_meta, *ds]
        if (e.tag.group, e.tag.element) in actions
    }
    assert listed - ADDED == set(PROFILE)  # every listed attribute of the samples has its expected action
    assert {keyword: CODES[actions[key(keyword)]] for keyword in PROFILE} == PROFILE


# -- the Basic Profile, attribute by attribute ------------------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small", "MR_small", "tiny_ct"])
def test_basic_profile_attribute_by_attribute(name: str) -> None:
    before = sample(name)
    deid = Deidentifier(settings())
    after = run(before, deid)
    assert check_profile(before, after, deid) == []
    assert after.PatientIdentityRemoved == "YES"
    assert after.LongitudinalTemporalInformationModified == "REMOVED"
    assert after.DeidentificationMethod == "PS3.15 Basic Profile (dicom-anonymizer 2.1.0, 2026c)"
    methods = [(i.CodeValue, i.CodingSchemeDesignator, i.CodeMeaning) for i in after.DeidentificationMethodCodeSequence]
    assert methods == [("113100", "DCM", "Basic Application Confidentiality Profile")]
    assert after.PixelData == before.PixelData
    assert not [e for e in after if e.tag.is_private]
    assert library.dictionary == {}  # the library's random, process-wide UID map is never used


def test_ct_small_by_name_identifying_values_are_gone() -> None:
    before = sample("CT_small")
    deid = Deidentifier(settings())
    after = run(before, deid)
    assert after.PatientName == after.PatientID == deid.pseudonym("patient\x001CT1\x00")
    assert after.PatientID.startswith("ANON-") and len(after.PatientID) == 21
    assert (after.PatientBirthDate, after.PatientSex, after.AccessionNumber, after.StudyID) == ("00010101", "", "", "")
    assert (after.InstitutionName, after.StationName, after.ReferringPhysicianName) == ("ANONYMIZED", "ANONYMIZED", "")
    assert (after.StudyDate, after.StudyTime, after.ContentDate) == ("00010101", "000000.00", "00010101")
    for gone in ("PatientAge", "PatientWeight", "StudyDescription", "ImageComments", "OtherPatientIDsSequence"):
        assert gone not in after
    assert after.file_meta.MediaStorageSOPInstanceUID == after.SOPInstanceUID != before.SOPInstanceUID
    assert (after.Manufacturer, after.Modality, after.SOPClassUID) == (before.Manufacturer, "CT", before.SOPClassUID)
    # No identifying value of the original is left anywhere in the encoded dataset.
    dump = io.BytesIO()
    without_pixels = after.copy()
    del without_pixels.PixelData
    dcmwrite(dump, without_pixels, enforce_file_format=True)
    for original in ("CompressedSamples", "1CT1", "JFK IMAGING", "CT01_OC0", "20040119", "19970430", "ABCD1234"):
        assert original.encode() not in dump.getvalue(), original
    for uid in (before.StudyInstanceUID, before.SeriesInstanceUID, before.SOPInstanceUID, before.FrameOfReferenceUID):
        assert uid.encode() not in dump.getvalue(), uid


# -- options --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["CT_small", "MR_small", "tiny_ct"])
def test_dates_shift_keeps_intervals_and_times_and_marks_modified(name: str) -> None:
    before = sample(name)
    deid = Deidentifier(settings(dates="shift", max_shift_days=400))
    after = run(before, deid)
    assert check_profile(before, after, deid, dates="shift") == []
    days = deid.shift_days(Deidentifier.patient_key(before))
    assert 1 <= days <= 400
    study = datetime.datetime.strptime(before.StudyDate, "%Y%m%d") - datetime.timedelta(days)
    assert after.StudyDate == study.strftime("%Y%m%d") and after.StudyTime == before.StudyTime
    if "ContentDate" in before and before.ContentDate:
        gap = datetime.datetime.strptime(before.ContentDate, "%Y%m%d") - datetime.datetime.strptime(
            before.StudyDate, "%Y%m%d"
        )
        shifted = datetime.datetime.strptime(after.ContentDate, "%Y%m%d") - study
        assert shifted == gap
    assert after.LongitudinalTemporalInformationModified == "MODIFIED"
    codes = [i.CodeValue for i in after.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113107"]


def test_dates_and_uids_retained() -> None:
    before = sample("CT_small")
    deid = Deidentifier(settings(uids="retain", dates="retain"))
    after = run(before, deid)
    assert check_profile(before, after, deid, dates="retain") == []
    assert (after.StudyInstanceUID, after.SOPInstanceUID) == (before.StudyInstanceUID, before.SOPInstanceUID)
    assert after.file_meta.MediaStorageSOPInstanceUID == before.file_meta.MediaStorageSOPInstanceUID
    assert (after.StudyDate, after.StudyTime, after.TimezoneOffsetFromUTC) == ("20040119", "072730", "-0500")
    assert after.PatientBirthDate == "00010101"  # no option retains the birth date
    assert "PatientAge" not in after and after.PatientName != before.PatientName
    codes = [i.CodeValue for i in after.DeidentificationMethodCodeSequence]
    assert codes == ["113100", "113110", "113106"]
    assert after.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_a_date_that_cannot_be_shifted_gets_the_profiles_action() -> None:
    ds = sample("tiny_ct")
    with pytest.warns(UserWarning, match="Invalid value for VR DA"):
        ds.StudyDate, ds.ContentDate, ds.AcquisitionDateTime = "2024", "20241332", "202403151200"
    after = run(ds, Deidentifier(settings(dates="shift")))
    assert (after.StudyDate, after.ContentDate) == ("00010101", "00010101")
    assert after.AcquisitionDateTime != "202403151200" and after.AcquisitionDateTime[8:] == "1200"


# -- consistency ----------------------------------------------------------------------------------------------


def test_one_study_keeps_one_remapped_study_series_and_frame_of_reference() -> None:
    deid = Deidentifier(settings(dates="shift"))
    first = run(tiny_ct(STUDY, SERIES, SERIES + ".1", index=0), deid)
    second = run(tiny_ct(STUDY, SERIES, SERIES + ".2", index=1), deid)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName"):
        assert first[keyword].value == second[keyword].value, keyword
    assert first.StudyInstanceUID == deid.uid(STUDY) and first.SeriesInstanceUID == deid.uid(SERIES)
    assert first.SOPInstanceUID != second.SOPInstanceUID
    assert len({first.StudyInstanceUID, first.SeriesInstanceUID, first.SOPInstanceUID, second.SOPInstanceUID}) == 4
    # Another object with the same settings (a restart) gives the same values.
    again = run(tiny_ct(STUDY, SERIES, SERIES + ".1", index=0), Deidentifier(settings(dates="shift")))
    assert (again.SOPInstanceUID, again.PatientID) == (first.SOPInstanceUID, first.PatientID)


def test_the_same_salt_gives_the_same_values_in_another_process() -> None:
    code = (
        "from node.config.deid import Deidentify; from node.send.deidentify import Deidentifier; "
        f"d = Deidentifier(Deidentify(salt='{SALT}')); "
        "print(d.uid('1.2.3'), d.pseudonym('patient\\x00P1\\x00'), d.shift_days('patient\\x00P1\\x00'))"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr
    deid = Deidentifier(settings())
    here = f"{deid.uid('1.2.3')} {deid.pseudonym(P1)} {deid.shift_days(P1)}"
    assert done.stdout.strip() == here


def test_another_salt_gives_other_uids_pseudonyms_and_shifts() -> None:
    one = Deidentifier(settings(dates="shift"))
    other = Deidentifier(Deidentify.model_validate({"salt": "another-node-salt-9876543210", "dates": "shift"}))
    a, b = run(sample("CT_small"), one), run(sample("CT_small"), other)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID", "PatientID"):
        assert a[keyword].value != b[keyword].value, keyword
    assert one.shift_days(P1) != other.shift_days(P1)


def test_patients_get_their_own_pseudonym_and_shift() -> None:
    deid = Deidentifier(settings(dates="shift"))
    ids = ["P1", "P2", "P3", "P4"]
    assert len({deid.pseudonym(f"patient\x00{p}\x00") for p in ids}) == 4
    assert len({deid.shift_days(f"patient\x00{p}\x00") for p in ids}) > 1
    no_id = tiny_ct(STUDY, SERIES, SERIES + ".1")
    no_id.PatientID = ""
    assert Deidentifier.patient_key(no_id) == f"study\x00{STUDY}"


# -- sequences ------------------------------------------------------------------------------------------------


def nested() -> tuple[Dataset, Dataset]:
    """An instance referring to another of its study, with kept, X/Z/U* and D sequences; and the other one."""
    other = tiny_ct(STUDY, SERIES, SERIES + ".2", index=1)
    ds = tiny_ct(STUDY, SERIES, SERIES + ".1")
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = CTImageStorage, other.SOPInstanceUID
    ds.ReferencedImageSequence = [ref]  # X/Z/U*
    instance = Dataset()
    instance.ReferencedSOPClassUID, instance.ReferencedSOPInstanceUID = CTImageStorage, other.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID, series.ReferencedInstanceSequence = SERIES, [instance]
    series.OperatorsName = "Doe^Jane"
    ds.ReferencedSeriesSequence = [series]  # not in the table: K, cleaned
    frame = Dataset()
    frame.FrameAcquisitionDateTime = "20240315101500"
    frame.private_block(0x0029, "ACME 1.0", create=True).add_new(0x10, "LO", "secret")
    group = Dataset()
    group.FrameContentSequence = [frame]
    ds.PerFrameFunctionalGroupsSequence = [group]
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = "121106", "DCM", "Comment"
    target = Dataset()
    target.ReferencedSOPClassUID, target.ReferencedSOPInstanceUID = CTImageStorage, other.SOPInstanceUID
    item = Dataset()
    item.ValueType, item.TextValue, item.ConceptNameCodeSequence = "TEXT", "seen by Dr Who", [concept]
    item.ReferencedSOPSequence = [target]
    ds.ContentSequence = [item]  # D
    return ds, other


def test_sequences_are_cleaned_and_their_references_follow_the_remapped_uids() -> None:
    deid = Deidentifier(settings())
    before, other = nested()
    after, other_after = run(before, deid), run(other, deid)
    ref = after.ReferencedImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == other_after.SOPInstanceUID == deid.uid(other.SOPInstanceUID)
    assert ref.ReferencedSOPClassUID == CTImageStorage
    series = after.ReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == after.SeriesInstanceUID
    assert series.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == other_after.SOPInstanceUID
    assert series.OperatorsName == "ANONYMIZED"
    frame = after.PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0]
    assert frame.FrameAcquisitionDateTime == DUMMY["DT"]  # D
    assert not [e for e in frame if e.tag.is_private]
    content = after.ContentSequence[0]  # D: every value a dummy, instance UIDs remapped, class UIDs kept
    assert (content.ValueType, content.TextValue) == ("ANONYMIZED", "ANONYMIZED")
    assert content.ConceptNameCodeSequence[0].CodeValue == "ANONYMIZED"
    assert content.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == other_after.SOPInstanceUID
    assert content.ReferencedSOPSequence[0].ReferencedSOPClassUID == CTImageStorage
    assert library.dictionary == {}


def test_nested_dates_shift_with_the_patient() -> None:
    deid = Deidentifier(settings(dates="shift"))
    before, _ = nested()
    after = run(before, deid)
    days = deid.shift_days(Deidentifier.patient_key(before))
    want = (datetime.datetime(2024, 3, 15) - datetime.timedelta(days)).strftime("%Y%m%d") + "101500"
    assert after.PerFrameFunctionalGroupsSequence[0].FrameContentSequence[0].FrameAcquisitionDateTime == want


def test_existing_method_codes_are_kept() -> None:
    ds = sample("tiny_ct")
    earlier = Dataset()
    earlier.CodeValue, earlier.CodingSchemeDesignator, earlier.CodeMeaning = "113101", "DCM", "Clean Pixel Data Option"
    ds.DeidentificationMethodCodeSequence = [earlier]
    after = run(ds, Deidentifier(settings()))
    assert [i.CodeValue for i in after.DeidentificationMethodCodeSequence] == ["113101", "113100"]


# -- refusals and the file ------------------------------------------------------------------------------------


def test_burned_in_annotation_is_refused() -> None:
    ds = sample("tiny_ct")
    ds.BurnedInAnnotation = "YES"
    with pytest.raises(DeidentifyError, match="Burned In Annotation is YES"):
        Deidentifier(settings())(ds)
    assert ds.PatientName == "Phantom^Tiny"  # untouched


def test_deidentified_reads_or_decodes_and_never_writes_the_file(tmp_path: Path) -> None:
    digest = hashlib.sha256(MR_JPEG_LS.read_bytes()).hexdigest()
    as_stored = deidentified(MR_JPEG_LS, settings())
    assert as_stored.file_meta.TransferSyntaxUID == dcmread(MR_JPEG_LS).file_meta.TransferSyntaxUID  # not decoded
    decoded = deidentified(MR_JPEG_LS, settings(), ExplicitVRLittleEndian)
    assert decoded.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert decoded.PatientName == as_stored.PatientName != dcmread(MR_JPEG_LS).PatientName
    assert decoded.pixel_array.tolist() == dcmread(MR_SMALL).pixel_array.tolist()
    assert hashlib.sha256(MR_JPEG_LS.read_bytes()).hexdigest() == digest
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not a DICOM file")
    with pytest.raises(DeidentifyError, match=r"broken\.dcm"):
        deidentified(broken, settings())


# -- config ---------------------------------------------------------------------------------------------------

BASE = '[node]\nae_title = "NODE"\ndata_dir = "data"\n'
PEER = '[[peers]]\nname = "research"\nae_title = "RESEARCH"\nhost = "10.2.3.4"\nport = 104\n'


def problems(deid: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + PEER + deid, "node.toml", Path("/srv/node"))
    return str(caught.value).splitlines()


def test_config_on_a_peer_inline_or_as_a_table() -> None:
    inline = parse_config(BASE + PEER + f'deidentify = {{ salt = "{SALT}", dates = "shift", max_shift_days = 30 }}\n')
    table = parse_config(BASE + PEER + f'[peers.deidentify]\nsalt = "{SALT}"\ndates = "shift"\nmax_shift_days = 30\n')
    assert inline.peers[0].deidentify == table.peers[0].deidentify
    deid = inline.peers[0].deidentify
    assert deid is not None
    assert (deid.profile, deid.uids, deid.dates, deid.max_shift_days, deid.pseudonym_prefix) == (
        "basic",
        "remap",
        "shift",
        30,
        "ANON-",
    )
    assert SALT not in repr(deid)  # a secret: never printed
    assert parse_config(BASE + PEER).peers[0].deidentify is None


def test_config_errors_name_their_key_path() -> None:
    assert problems('[peers.deidentify]\nsalt = "short"\n') == [
        "node.toml: peers.0.deidentify.salt: must have at least 16 characters (a secret of this node: "
        "`openssl rand -hex 16` makes one), not SecretStr('**********')"
    ]
    assert problems('[peers.deidentify]\nuids = "remap"\n') == [
        "node.toml: peers.0.deidentify.salt: missing (required)"
    ]
    lines = problems(f'[peers.deidentify]\nsalt = "{SALT}"\ndates = "blur"\nkeep = true\n')
    assert lines[0].startswith("node.toml: peers.0.deidentify.keep: unknown key (allowed here: profile, uids, dates")
    assert lines[1] == "node.toml: peers.0.deidentify.dates: must be 'remove', 'shift' or 'retain', not 'blur'"
    assert problems(f'[peers.deidentify]\nsalt = "{SALT}"\nmax_shift_days = 30\n') == [
        "node.toml: peers.0.deidentify.max_shift_days: applies only with dates = 'shift' (dates is 'remove')"
    ]
    assert problems(f'[peers.deidentify]\nsalt = "{SALT}"\ndates = "shift"\nmax_shift_days = 0\n') == [
        "node.toml: peers.0.deidentify.max_shift_days: must be 1..36500, not 0"
    ]
    assert problems(f'[peers.deidentify]\nsalt = "{SALT}"\npseudonym_prefix = "Dr Who"\n') == [
        "node.toml: peers.0.deidentify.pseudonym_prefix: must be 0..16 of A-Z, a-z, 0-9, '-', '_', '.', not 'Dr Who'"
    ]


def test_the_commented_example_in_rules_toml_validates_once_uncommented() -> None:
    path = Path(__file__).resolve().parents[2] / "config" / "examples" / "rules.toml"
    lines = path.read_text().splitlines()
    start = lines.index("# [peers.deidentify]")
    block = [line.removeprefix("# ") for line in lines[start:] if line.startswith("# ")][:6]
    assert block[0] == "[peers.deidentify]" and block[1].startswith("salt = ")
    text = "\n".join(lines[:start] + block + lines[start + len(block) :])
    config = parse_config(text, "rules.toml", path.parent)
    deid = config.peer("research").deidentify
    assert deid is not None and (deid.uids, deid.dates, deid.pseudonym_prefix) == ("remap", "shift", "RES-")


def test_results_refer_to_the_deidentified_sources(tmp_path: Path) -> None:
    """A SEG and an SR built by node.encode from a phantom series, each sent from its file as the sender does:
    their study, frame of reference and every source they reference are the remapped ones of the series."""
    from node.encode import encode_results
    from tests.encode_fixtures import lung_card, make_result, write_phantom

    volume = write_phantom(tmp_path / "series", shape=(8, 32, 32))
    sources = [dcmread(path) for path in sorted((tmp_path / "series").glob("*.dcm"))]
    deid = Deidentifier(settings(dates="shift"))
    sent_sources = [deidentified(path, deid.settings) for path in sorted((tmp_path / "series").glob("*.dcm"))]
    remapped = {s.SOPInstanceUID for s in sent_sources}
    originals = {str(e.value) for s in sources for e in s.iterall() if e.VR == "UI"}
    originals = {uid for uid in originals if not uid.startswith("1.2.840.10008.")}  # not classes, syntaxes
    for n, result in enumerate(encode_results(make_result(volume), lung_card())):
        path = tmp_path / f"result{n}.dcm"
        result.save_as(path, enforce_file_format=True)
        sent = deidentified(path, deid.settings)
        assert sent.StudyInstanceUID == sent_sources[0].StudyInstanceUID == deid.uid(sources[0].StudyInstanceUID)
        if "FrameOfReferenceUID" in result:  # the SEG's
            assert sent.FrameOfReferenceUID == sent_sources[0].FrameOfReferenceUID
        refs = {str(e.value) for e in sent.iterall() if e.keyword == "ReferencedSOPInstanceUID"}
        assert remapped & refs and refs <= remapped | {deid.uid(str(e.value)) for e in result.iterall() if e.VR == "UI"}
        assert not {str(e.value) for e in sent.iterall() if e.VR == "UI"} & originals, sent.Modality
        assert sent.PatientID == sent_sources[0].PatientID and sent.StudyDate == sent_sources[0].StudyDate
    assert library.dictionary == {}
