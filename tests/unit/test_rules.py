"""Routing rules: every operator on real datasets, combinators, stop and levels, and the config errors of bad rules.

Rules are written in TOML, as an administrator writes them, and parsed by the real config loader.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian

import node.config
from node.config import NodeConfig, Rule, load_config, parse_config
from node.errors import ConfigError
from node.routing.match import Check, Facts, describe, evaluate, evaluate_all, required_tags

REPO = Path(__file__).resolve().parents[2]
BASE = '[node]\nae_title = "NODE"\ndata_dir = "data"\n'
PEERS = (
    '[[peers]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\nport = 4242\n'
    '[[peers]]\nname = "research"\nae_title = "RES"\nhost = "10.3.0.1"\nport = 104\n'
    '[[peers]]\nname = "ct"\nae_title = "CT1"\nallow_store = true\n'
)
KEYS = "attribute, calling_ae, called_ae, source_address, equals, not_equals, one_of, regex, contains, exists, "
KEYS += "missing, lt, le, gt, ge, between"
INSTANCE = "an instance-level rule acts on each instance as it arrives, without waiting for completion"


def _read(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    assert path is not None, name
    return dcmread(path, stop_before_pixels=True)


def _built() -> Dataset:
    """A thin chest CT scout with what the pydicom files lack: empty sequence, unknown-VR bytes, long text."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SeriesDescription = "Thorax Topogram 0.6 "
    ds.BodyPartExamined = "CHEST"
    ds.SliceThickness = "1.25"
    ds.SeriesNumber = 3
    ds.WindowCenter = ["40", "-600"]
    ds.ReferencedImageSequence = Sequence()
    ds.ImageComments = "X" * 100
    ds.add_new(0x00091010, "UN", b"ABC\\DEF ")
    ds.add_new(0x00091011, "UN", b"\xff\xfe")
    return ds


NO_FACTS = Facts()
CT, MR, BUILT = _read("CT_small.dcm"), _read("MR_small.dcm"), _built()
DATA = {"CT": CT, "MR": MR, "BUILT": BUILT}


def config(rules: str, extra: str = "") -> NodeConfig:
    return parse_config(BASE + PEERS + extra + rules)


def rule(when: str, **keys: str) -> Rule:
    """One study-level rule forwarding to the PACS, ``when`` the TOML given."""
    lines = "".join(f"{key} = {value}\n" for key, value in keys.items())
    return config(f'[[rules]]\nname = "r"\nforward = ["pacs"]\n{lines}when = {when}\n').rules[0]


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + PEERS + text)
    return [line.removeprefix("node.toml: ") for line in str(caught.value).splitlines()]


# --- Every operator, true and false, on real datasets -------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "when", "passed", "actual"),
    [
        # equals: a string is the whole value (joined with '\'), a number a single numeric value.
        ("CT", '{ attribute = "Modality", equals = "CT" }', True, "CT"),
        ("MR", '{ attribute = "Modality", equals = "CT" }', False, "MR"),
        ("CT", r"{ attribute = 'ImageType', equals = 'ORIGINAL\PRIMARY\AXIAL' }", True, "ORIGINAL\\PRIMARY\\AXIAL"),
        ("CT", '{ attribute = "ImageType", equals = "ORIGINAL" }', False, "ORIGINAL\\PRIMARY\\AXIAL"),
        ("CT", '{ attribute = "SliceThickness", equals = 5 }', True, "5.000000"),
        ("CT", '{ attribute = "SliceThickness", equals = "5" }', False, "5.000000"),
        ("MR", '{ attribute = "SliceThickness", equals = 0.8 }', True, "0.8000"),
        ("CT", '{ attribute = "Rows", equals = 128 }', True, "128"),
        (
            "CT",
            '{ attribute = "ImagePositionPatient", equals = -158.135803 }',
            False,
            "-158.135803\\-179.035797\\-75.699997",
        ),
        ("CT", '{ attribute = "Manufacturer", equals = "ge medical systems" }', False, "GE MEDICAL SYSTEMS"),
        ("CT", '{ attribute = "BodyPartExamined", equals = "CHEST" }', False, "missing"),
        # not_equals: exactly "not equals", so a missing attribute passes.
        ("CT", '{ attribute = "Modality", not_equals = "MR" }', True, "CT"),
        ("MR", '{ attribute = "Modality", not_equals = "MR" }', False, "MR"),
        ("CT", '{ attribute = "BodyPartExamined", not_equals = "HEAD" }', True, "missing"),
        ("MR", '{ attribute = "SliceThickness", not_equals = 0.8 }', False, "0.8000"),
        # one_of: equals one of the list; strings and numbers mixed.
        ("CT", '{ attribute = "Modality", one_of = ["MR", "CT"] }', True, "CT"),
        ("MR", '{ attribute = "Modality", one_of = ["CT", "PT"] }', False, "MR"),
        ("CT", '{ attribute = "SliceThickness", one_of = ["thin", 1, 5] }', True, "5.000000"),
        ("CT", '{ attribute = "ImageType", one_of = ["AXIAL", "LOCALIZER"] }', False, "ORIGINAL\\PRIMARY\\AXIAL"),
        # regex: searched in the joined value.
        ("CT", r"{ attribute = 'Manufacturer', regex = '(?i)^ge\b' }", True, "GE MEDICAL SYSTEMS"),
        ("MR", r"{ attribute = 'Manufacturer', regex = '(?i)^ge\b' }", False, "TOSHIBA_MEC"),
        ("CT", r"{ attribute = 'ImageType', regex = 'PRIMARY\\AXIAL$' }", True, "ORIGINAL\\PRIMARY\\AXIAL"),
        ("BUILT", '{ attribute = "SeriesDescription", regex = "(?i)scout|topogram" }', True, "Thorax Topogram 0.6"),
        ("CT", '{ attribute = "SeriesDescription", regex = "" }', False, "missing"),
        # contains: one of the values of a multi-valued attribute, a substring of a single value.
        ("CT", '{ attribute = "ImageType", contains = "AXIAL" }', True, "ORIGINAL\\PRIMARY\\AXIAL"),
        ("CT", '{ attribute = "ImageType", contains = "AXI" }', False, "ORIGINAL\\PRIMARY\\AXIAL"),
        ("CT", '{ attribute = "Manufacturer", contains = "MEDICAL" }', True, "GE MEDICAL SYSTEMS"),
        ("MR", '{ attribute = "Manufacturer", contains = "MEDICAL" }', False, "TOSHIBA_MEC"),
        (
            "CT",
            '{ attribute = "ImagePositionPatient", contains = -75.699997 }',
            True,
            "-158.135803\\-179.035797\\-75.699997",
        ),
        ("CT", '{ attribute = "ImagePositionPatient", contains = 1 }', False, "-158.135803\\-179.035797\\-75.699997"),
        ("BUILT", '{ attribute = "WindowCenter", contains = -600 }', True, "40\\-600"),
        # exists / missing: present with a value; an empty value and an empty sequence count as missing.
        ("CT", '{ attribute = "Modality", exists = true }', True, "CT"),
        ("CT", '{ attribute = "BodyPartExamined", exists = true }', False, "missing"),
        ("CT", '{ attribute = "AccessionNumber", exists = true }', False, "empty"),
        ("CT", '{ attribute = "OtherPatientIDsSequence", exists = true }', True, "a sequence of 2 items"),
        ("BUILT", '{ attribute = "ReferencedImageSequence", exists = true }', False, "a sequence of 0 items"),
        ("MR", '{ attribute = "PatientSize", missing = true }', True, "empty"),
        ("CT", '{ attribute = "BodyPartExamined", missing = true }', True, "missing"),
        ("CT", '{ attribute = "Modality", missing = true }', False, "CT"),
        # lt, le, gt, ge, between: a single number; anything else is false and says why.
        ("CT", '{ attribute = "SliceThickness", lt = 5 }', False, "5.000000"),
        ("CT", '{ attribute = "SliceThickness", le = 5 }', True, "5.000000"),
        ("CT", '{ attribute = "SliceThickness", gt = 4.5 }', True, "5.000000"),
        ("CT", '{ attribute = "SliceThickness", ge = 5.5 }', False, "5.000000"),
        ("MR", '{ attribute = "SliceThickness", lt = 1 }', True, "0.8000"),
        ("CT", '{ attribute = "RescaleIntercept", ge = -1024 }', True, "-1024"),
        ("CT", '{ attribute = "ExposureTime", gt = 1600 }', True, "1601"),
        ("CT", '{ attribute = "SliceThickness", between = [0.5, 2.5] }', False, "5.000000"),
        ("MR", '{ attribute = "SliceThickness", between = [0.5, 2.5] }', True, "0.8000"),
        ("CT", '{ attribute = "SliceThickness", between = [5, 5] }', True, "5.000000"),
        ("CT", '{ attribute = "Modality", lt = 1 }', False, "CT (not a single number)"),
        (
            "CT",
            '{ attribute = "ImagePositionPatient", lt = 0 }',
            False,
            "-158.135803\\-179.035797\\-75.699997 (not a single number)",
        ),
        ("CT", '{ attribute = "BodyPartExamined", gt = 0 }', False, "missing"),
        # Tags instead of keywords; private tags; the file meta; unknown-VR bytes; long values are cut.
        ("CT", '{ attribute = "(0008,0060)", equals = "CT" }', True, "CT"),
        ("CT", '{ attribute = "00080060", one_of = ["MR"] }', False, "CT"),
        ("CT", '{ attribute = "(0018,0050)", between = [0.5, 2.5] }', False, "5.000000"),
        ("CT", '{ attribute = "(0009,1002)", equals = "CT01" }', True, "CT01"),
        ("CT", '{ attribute = "(0002,0010)", equals = "1.2.840.10008.1.2.1" }', True, "1.2.840.10008.1.2.1"),
        ("BUILT", '{ attribute = "TransferSyntaxUID", exists = true }', True, "1.2.840.10008.1.2.1"),
        ("BUILT", '{ attribute = "(0009,1010)", contains = "DEF" }', True, "ABC\\DEF"),
        ("BUILT", '{ attribute = "(0009,1011)", equals = "x" }', False, "<2 bytes>"),
        ("BUILT", '{ attribute = "ImageComments", equals = "X" }', False, "X" * 63 + "…"),
    ],
)
def test_operator(data: str, when: str, passed: bool, actual: str) -> None:
    verdict = evaluate(rule(when), DATA[data], Facts())
    assert (verdict.matched, [c.actual for c in verdict.checks]) == (passed, [actual])
    assert verdict.checks[0].passed is passed


@pytest.mark.parametrize(
    ("when", "facts", "passed", "actual"),
    [
        ('{ calling_ae = { equals = "CT1" } }', Facts("CT1"), True, "CT1"),
        ('{ calling_ae = { equals = "CT1" } }', Facts("CT1   "), True, "CT1"),
        ('{ calling_ae = { equals = "CT1" } }', Facts("CT2"), False, "CT2"),
        ('{ calling_ae = { equals = "CT1" } }', Facts(), False, "missing"),
        ("{ calling_ae = { missing = true } }", Facts(), True, "missing"),
        ('{ calling_ae = { not_equals = "CT1" } }', Facts(), True, "missing"),
        ('{ called_ae = { one_of = ["NODE", "AI_NODE"] } }', Facts("CT1", "AI_NODE"), True, "AI_NODE"),
        ('{ called_ae = { regex = "^RESEARCH" } }', Facts("CT1", "AI_NODE"), False, "AI_NODE"),
        ('{ source_address = { regex = "^10\\\\.1\\\\.2\\\\." } }', Facts(source_address="10.1.2.3"), True, "10.1.2.3"),
        ('{ source_address = { contains = "10.1." } }', Facts(source_address="10.9.2.3"), False, "10.9.2.3"),
        ("{ source_address = { exists = true } }", Facts(source_address="::1"), True, "::1"),
    ],
)
def test_association_facts(when: str, facts: Facts, passed: bool, actual: str) -> None:
    verdict = evaluate(rule(when), MR, facts)
    assert (verdict.matched, [c.actual for c in verdict.checks]) == (passed, [actual])


# --- all / any / not, and what explain() says ----------------------------------------------------------------

MODALITY_MR = '{ attribute = "Modality", equals = "MR" }'
THIN = '{ attribute = "SliceThickness", between = [0.5, 2.5] }'
CALLER_CT1 = '{ calling_ae = { equals = "CT1" } }'
FROM_LAB = '{ source_address = { one_of = ["10.1.2.3", "10.1.2.4"] } }'


@pytest.mark.parametrize(
    ("data", "when", "facts", "explained", "evaluated"),
    [
        ("MR", f"{{ all = [{MODALITY_MR}, {THIN}] }}", Facts(), "matched", 2),
        # all: the first failing check, and nothing after it is evaluated.
        (
            "CT",
            f"{{ all = [{MODALITY_MR}, {THIN}] }}",
            Facts(),
            "not matched: Modality equals 'MR' failed (actual CT)",
            1,
        ),
        (
            "CT",
            f'{{ all = [{{ attribute = "Modality", equals = "CT" }}, {THIN}, {MODALITY_MR}] }}',
            Facts(),
            "not matched: SliceThickness between 0.5 and 2.5 failed (actual 5.000000)",
            2,
        ),
        # any: every failing check; evaluation ends at the first that holds.
        (
            "CT",
            f"{{ any = [{CALLER_CT1}, {FROM_LAB}] }}",
            Facts("CT2", "NODE", "10.9.9.9"),
            "not matched: calling_ae equals 'CT1' failed (actual CT2); "
            "source_address is one of '10.1.2.3', '10.1.2.4' failed (actual 10.9.9.9)",
            2,
        ),
        ("CT", f"{{ any = [{CALLER_CT1}, {FROM_LAB}] }}", Facts("CT1"), "matched", 1),
        ("CT", f"{{ any = [{CALLER_CT1}, {FROM_LAB}] }}", Facts("X", "", "10.1.2.4"), "matched", 2),
        # not: the negated condition, with the actual values it saw.
        ("MR", '{ not = { attribute = "Modality", equals = "CT" } }', Facts(), "matched", 1),
        (
            "CT",
            '{ not = { attribute = "Modality", equals = "CT" } }',
            Facts(),
            "not matched: not Modality equals 'CT' failed (actual CT)",
            1,
        ),
        (
            "BUILT",
            '{ not = { attribute = "SeriesDescription", regex = "(?i)scout|topogram" } }',
            Facts(),
            "not matched: not SeriesDescription matches '(?i)scout|topogram' failed (actual Thorax Topogram 0.6)",
            1,
        ),
        (
            "CT",
            '{ not = { all = [{ attribute = "Modality", equals = "CT" }, { attribute = "SliceThickness", ge = 5 }] } }',
            Facts(),
            "not matched: not (Modality equals 'CT' and SliceThickness >= 5) failed (actual CT, 5.000000)",
            1,
        ),
        # Nested: an any inside an all reports all of its failures.
        (
            "CT",
            f'{{ all = [{{ attribute = "Modality", equals = "CT" }}, {{ any = [{CALLER_CT1}, {FROM_LAB}] }}] }}',
            Facts("CT9", "NODE", "10.0.0.1"),
            "not matched: calling_ae equals 'CT1' failed (actual CT9); "
            "source_address is one of '10.1.2.3', '10.1.2.4' failed (actual 10.0.0.1)",
            3,
        ),
        (
            "BUILT",
            f'{{ all = [{{ any = [{MODALITY_MR}, {{ attribute = "ImageType", contains = "LOCALIZER" }}] }}, '
            f'{{ not = {{ any = [{CALLER_CT1}, {{ attribute = "SliceThickness", lt = 1 }}] }} }}] }}',
            Facts("CT1"),
            "not matched: not (calling_ae equals 'CT1' or SliceThickness < 1) failed (actual CT1)",
            3,
        ),
    ],
)
def test_combinators(data: str, when: str, facts: Facts, explained: str, evaluated: int) -> None:
    verdict = evaluate(rule(when), DATA[data], facts)
    assert verdict.explain() == explained
    assert verdict.matched is (explained == "matched")
    assert len(verdict.checks) == evaluated
    assert all(check in verdict.checks for check in verdict.failed)


def test_a_rule_without_when_matches_everything() -> None:
    verdict = evaluate(config('[[rules]]\nname = "all"\nforward = ["pacs"]\n').rules[0], Dataset(), Facts())
    assert (verdict.matched, verdict.checks, verdict.explain()) == (True, (), "matched")


def test_describe_and_checks_name_the_keyword_even_for_a_tag() -> None:
    written = rule(
        '{ all = [{ attribute = "(0018,0050)", between = [0.5, 2.5] }, { attribute = "(0009,1002)", exists = true }, '
        '{ any = [{ called_ae = { equals = "NODE" } }, { not = { attribute = "Modality", one_of = ["SR", 3] } }] }] }'
    )
    assert written.when is not None
    assert describe(written.when) == (
        "(SliceThickness between 0.5 and 2.5 and (0009,1002) exists and "
        "(called_ae equals 'NODE' or not Modality is one of 'SR', 3))"
    )
    assert evaluate(written, MR, Facts()).checks[0] == Check("SliceThickness between 0.5 and 2.5", True, "0.8000")


# --- stop, discard and levels -----------------------------------------------------------------------------

LEVELS = """
[[rules]]
name = "ct-to-pacs"
level = "instance"
when = { attribute = "Modality", equals = "CT" }
forward = ["pacs"]
[[rules]]
name = "scouts"
level = "instance"
when = { attribute = "ImageType", contains = "LOCALIZER" }
discard = true
[[rules]]
name = "ct-to-research"
level = "instance"
when = { attribute = "Modality", equals = "CT" }
forward = ["research"]
[[rules]]
name = "thin"
level = "series"
stop = true
when = { attribute = "SliceThickness", lt = 2 }
analyse = ["lung-nodule-ct"]
[[rules]]
name = "every-series"
level = "series"
forward = ["research"]
[[rules]]
name = "every-study"
level = "study"
forward = ["pacs"]
"""


def test_stop_and_discard_end_their_level_only() -> None:
    rules = config(LEVELS).rules
    verdicts = evaluate_all(rules, BUILT, Facts())
    assert [(v.rule.name, v.matched, v.evaluated) for v in verdicts] == [
        ("ct-to-pacs", True, True),
        ("scouts", True, True),
        ("ct-to-research", False, False),
        ("thin", True, True),
        ("every-series", False, False),
        ("every-study", True, True),
    ]
    assert verdicts[2].stopped_by == "scouts" and verdicts[2].checks == ()
    assert verdicts[2].explain() == "not evaluated: rule 'scouts' matched first and stops the instance-level rules"
    assert verdicts[4].explain() == "not evaluated: rule 'thin' matched first and stops the series-level rules"


def test_a_stop_rule_that_does_not_match_stops_nothing() -> None:
    verdicts = evaluate_all(config(LEVELS).rules, CT, Facts())
    assert [(v.rule.name, v.matched) for v in verdicts] == [
        ("ct-to-pacs", True),
        ("scouts", False),
        ("ct-to-research", True),
        ("thin", False),
        ("every-series", True),
        ("every-study", True),
    ]
    assert all(v.evaluated for v in verdicts)


@pytest.mark.parametrize(
    ("level", "names"),
    [
        ("instance", ["ct-to-pacs", "scouts", "ct-to-research"]),
        ("series", ["thin", "every-series"]),
        ("study", ["every-study"]),
    ],
)
def test_level_filters_the_rules(level: str, names: list[str]) -> None:
    verdicts = evaluate_all(config(LEVELS).rules, BUILT, Facts(), level=level)
    assert [v.rule.name for v in verdicts] == names
    assert [v.evaluated for v in verdicts] == [
        v.evaluated for v in evaluate_all(config(LEVELS).rules, BUILT, Facts()) if v.rule.level == level
    ]


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="level must be one of instance, series, study, not 'patient'"):
        evaluate_all(config(LEVELS).rules, CT, Facts(), level="patient")


def test_required_tags_are_the_attributes_the_rules_read() -> None:
    rules = config(LEVELS).rules + (
        rule(f"{{ not = {{ any = [{THIN}, {CALLER_CT1}, {{ attribute = '00091002', exists = true }}] }} }}"),
    )
    assert required_tags(rules) == (0x00080008, 0x00080060, 0x00091002, 0x00180050)


# --- Config errors: each names the rule (index and name) and the key ----------------------------------------


def one(when: str = '{ attribute = "Modality", equals = "CT" }', **keys: str) -> str:
    lines = "".join(f"{key} = {value}\n" for key, value in keys.items())
    return f'[[rules]]\nname = "chest-ct"\n{lines}when = {when}\n'


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            one('{ attribute = "Modality", equal = "CT" }', forward='["pacs"]'),
            f"rules.0 (chest-ct).when.equal: unknown key (allowed here: {KEYS})",
        ),
        (
            one('{ attribute = "Modality", equals = "CT", regex = "C" }', forward='["pacs"]'),
            "rules.0 (chest-ct).when.regex: one operator per test, not both equals and regex "
            "(combine tests with all = [...])",
        ),
        (
            one('{ attribute = "Modality" }', forward='["pacs"]'),
            "rules.0 (chest-ct).when: no operator: give one of equals, not_equals, one_of, regex, contains, exists, "
            "missing, lt, le, gt, ge, between",
        ),
        (
            one('{ all = [{ attribute = "Modalty", equals = "CT" }] }', forward='["pacs"]'),
            "rules.0 (chest-ct).when.all.0.attribute: 'Modalty' is not a DICOM keyword or tag (did you mean "
            "'Modality'? a keyword such as 'SliceThickness', or a tag written '(0018,0050)' or '00180050')",
        ),
        (
            one('{ attribute = "(0018,005)", exists = true }', forward='["pacs"]'),
            "rules.0 (chest-ct).when.attribute: '(0018,005)' is not a DICOM keyword or tag (a keyword such as "
            "'SliceThickness', or a tag written '(0018,0050)' or '00180050')",
        ),
        (
            one('{ not = { attribute = "SeriesDescription", regex = "scout(" } }', forward='["pacs"]'),
            "rules.0 (chest-ct).when.not.regex: not a valid regular expression: missing ), unterminated subpattern "
            "at position 5 (in 'scout(')",
        ),
        (
            one('{ attribute = "SliceThickness", between = [2.5, 0.5] }', forward='["pacs"]'),
            "rules.0 (chest-ct).when.between: must be [low, high] with low <= high, not [2.5, 0.5]",
        ),
        (
            one('{ attribute = "SliceThickness", between = [1] }', forward='["pacs"]'),
            "rules.0 (chest-ct).when.between: must be [low, high], two numbers, not [1]",
        ),
        (
            one('{ attribute = "SliceThickness", lt = "2" }', forward='["pacs"]'),
            "rules.0 (chest-ct).when.lt: must be a number, not '2'",
        ),
        (
            one('{ attribute = "Modality", one_of = [] }', forward='["pacs"]'),
            "rules.0 (chest-ct).when.one_of: must be a non-empty array of strings or numbers, not []",
        ),
        (
            one('{ attribute = "Modality", equals = true }', forward='["pacs"]'),
            "rules.0 (chest-ct).when.equals: must be a string or a number, not true",
        ),
        (
            one('{ attribute = "Modality", exists = false }', forward='["pacs"]'),
            "rules.0 (chest-ct).when.exists: must be true, not false (to test absence, write missing = true)",
        ),
        (
            one('{ attribute = "Modality", calling_ae = { equals = "CT1" } }', forward='["pacs"]'),
            "rules.0 (chest-ct).when.calling_ae: one subject per test, not both attribute and calling_ae "
            "(combine tests with all = [...])",
        ),
        (
            one('{ calling_ae = { equals = "CT1" }, equals = "CT1" }', forward='["pacs"]'),
            "rules.0 (chest-ct).when.equals: with calling_ae, the operator goes in its table: "
            "calling_ae = { equals = ... }",
        ),
        (
            one('{ calling_ae = "CT1" }', forward='["pacs"]'),
            'rules.0 (chest-ct).when.calling_ae: must be a table with one operator such as { equals = "CT1" }, '
            "not 'CT1'",
        ),
        (
            one('{ equals = "CT" }', forward='["pacs"]'),
            "rules.0 (chest-ct).when: missing: say what to test: attribute = KEYWORD_OR_TAG and an operator, "
            "or calling_ae, called_ae or source_address = { operator = value }",
        ),
        (
            one("{ all = [], any = [] }", forward='["pacs"]'),
            "rules.0 (chest-ct).when: has both all and any: a condition is one of all = [...], any = [...], "
            "not = {...} or a test (attribute, calling_ae, called_ae or source_address)",
        ),
        (
            one("{ any = [] }", forward='["pacs"]'),
            "rules.0 (chest-ct).when.any: must not be empty: list one or more conditions such as "
            '{ attribute = "Modality", equals = "CT" }',
        ),
        (
            one('"Modality = CT"', forward='["pacs"]'),
            'rules.0 (chest-ct).when: must be a table such as { attribute = "Modality", equals = "CT" }, '
            "not 'Modality = CT'",
        ),
        # Actions.
        (
            one(forward='["pacs", "archiv"]'),
            "rules.0 (chest-ct).forward: 'archiv' is not a peer (peers: pacs, research, ct; or '@caller')",
        ),
        (one(forward='["ct"]'), "rules.0 (chest-ct).forward: peer 'ct' has no host and port to send to"),
        (one(forward='["@sender"]'), "rules.0 (chest-ct).forward.0: must be a peer name or '@caller', not '@sender'"),
        (
            one(analyse='["lung-nodule-ct"]', results_to='["nope"]'),
            "rules.0 (chest-ct).results_to: 'nope' is not a peer (peers: pacs, research, ct; or '@caller')",
        ),
        (
            one(forward='["pacs"]', discard="true"),
            "rules.0 (chest-ct).forward: must be empty with discard = true (a discarded object is only stored)",
        ),
        (
            one(level='"instance"', analyse='["lung-nodule-ct"]'),
            f"rules.0 (chest-ct).analyse: only at level 'series' or 'study': {INSTANCE}",
        ),
        (
            one(level='"instance"', forward='["pacs"]', quiet_seconds="5"),
            f"rules.0 (chest-ct).quiet_seconds: only at level 'series' or 'study': {INSTANCE}",
        ),
        (
            one(forward='["pacs"]', quiet_seconds="900"),
            "rules.0 (chest-ct).quiet_seconds: must be <= completion.max_wait_seconds (600), not 900",
        ),
        (one(forward='["pacs"]', quiet_seconds="0"), "rules.0 (chest-ct).quiet_seconds: must be > 0, not 0.0"),
        (
            one(forward='["pacs"]', results_to='["pacs"]'),
            "rules.0 (chest-ct).results_to: only with analyse = [...]: it says where the analysis results go",
        ),
        (
            one(forward='["pacs", "pacs"]'),
            "rules.0 (chest-ct).forward: 'pacs' is listed twice",
        ),
        (one(), "rules.0 (chest-ct): does nothing: give forward = [...], analyse = [...] or discard = true"),
        (
            one(forward='["pacs"]', level='"patient"'),
            "rules.0 (chest-ct).level: must be 'instance', 'series' or 'study', not 'patient'",
        ),
        (
            one(forward='["pacs"]', priority='"high"'),
            "rules.0 (chest-ct).priority: must be 'urgent', 'normal' or 'low', not 'high'",
        ),
        (
            one(forward='["pacs"]', colour='"red"'),
            "rules.0 (chest-ct).colour: unknown key (allowed here: name, level, "
            "priority, quiet_seconds, stop, when, forward, analyse, results_to, discard)",
        ),
        (
            one(forward='["pacs"]').replace('"chest-ct"', '"Chest CT"'),
            "rules.0 (Chest CT).name: must be 1..64 of a-z, 0-9, '-', '_', starting with a letter or digit, "
            "not 'Chest CT'",
        ),
        ('[[rules]]\nforward = ["pacs"]\n', "rules.0.name: missing (required)"),
        (
            one(forward='["pacs"]') + one(discard="true"),
            "rules.1 (chest-ct).name: 'chest-ct' is already a rule name; names must be unique",
        ),
        # [fallback] and [analysis] with rules.
        (
            one(forward='["pacs"]') + '[fallback]\nforward = ["vna"]\n',
            "fallback.forward: 'vna' is not a peer (peers: pacs, research, ct; or '@caller')",
        ),
        (
            one(forward='["pacs"]') + '[fallback]\nresults_to = ["pacs"]\n',
            "fallback.results_to: only with analyse = [...]: it says where the analysis results go",
        ),
        (
            '[fallback]\nforward = ["pacs"]\n',
            "fallback: only with [[rules]]: without rules, every complete study is analysed as [analysis] says",
        ),
        (
            '[analysis]\nmodels = ["lung-nodule-ct"]\n' + one(forward='["pacs"]'),
            "analysis.models: with [[rules]], say which studies each model analyses with analyse = [...] in a rule "
            "(or [fallback]); analysis.models applies only to configs without rules",
        ),
    ],
)
def test_each_bad_rule_is_one_line_naming_the_rule_and_the_key(text: str, line: str) -> None:
    assert problems(text) == [line]


def test_rules_must_be_an_array_of_tables() -> None:
    with pytest.raises(ConfigError, match=r"^node.toml: rules: must be an array, not 3$"):
        parse_config("rules = 3\n" + BASE)
    with pytest.raises(ConfigError, match=r"^node.toml: rules.0: must be a table, not 'x'$"):
        parse_config('rules = ["x"]\n' + BASE)


def test_every_rule_problem_is_reported_at_once_under_its_own_name() -> None:
    text = one(forward='["pacs"]').replace("chest-ct", "a") + one('{ not = { attribute = "Nope", exists = true } }')
    text += one(forward='["pacs"]', level='"instance"', analyse='["m"]').replace("chest-ct", "c")
    assert problems(text) == [
        "rules.1 (chest-ct).when.not.attribute: 'Nope' is not a DICOM keyword or tag (a keyword such as "
        "'SliceThickness', or a tag written '(0018,0050)' or '00180050')",
        f"rules.2 (c).analyse: only at level 'series' or 'study': {INSTANCE}",
    ]


# --- Compatibility: [analysis] without rules, effective rules, models in use ---------------------------------


def test_without_rules_the_analysis_section_is_one_study_rule() -> None:
    plain = parse_config(
        BASE + PEERS + '[analysis]\nmodels = ["lung-nodule-ct", "liver"]\nsend_results_to = ["pacs"]\n'
    )
    (only,) = plain.effective_rules()
    assert (only.name, only.level, only.priority, only.when, only.stop) == ("analysis", "study", "normal", None, False)
    assert (only.analyse, only.forward, only.discard) == (("lung-nodule-ct", "liver"), (), False)
    assert plain.results_to(only) == ("pacs",)
    assert evaluate(only, MR, Facts()).matched
    assert plain.models_in_use() == ("lung-nodule-ct", "liver")
    default = parse_config(BASE)
    assert [r.analyse for r in default.effective_rules()] == [("lung-nodule-ct",)]
    assert default.models_in_use() == ("lung-nodule-ct",) and default.rules == ()
    nothing = parse_config(BASE + "[analysis]\nmodels = []\n")
    assert nothing.effective_rules() == () and nothing.models_in_use() == ()


def test_shipped_config_keeps_working_as_the_analysis_rule() -> None:
    shipped = load_config(REPO / "config" / "node.toml")
    assert [(r.name, r.analyse) for r in shipped.effective_rules()] == [("analysis", ("lung-nodule-ct", "ecg-rhythm"))]
    assert shipped.results_to(shipped.effective_rules()[0]) == ("pacs",)


def test_with_rules_the_rules_are_effective_and_name_the_models() -> None:
    rules = config(
        '[analysis]\nsend_results_to = ["pacs"]\n' + LEVELS + '[fallback]\nanalyse = ["liver", "lung-nodule-ct"]\n'
        'results_to = ["@caller", "research"]\n'
    )
    assert rules.effective_rules() == rules.rules and len(rules.rules) == 6
    assert rules.models_in_use() == ("lung-nodule-ct", "liver")
    assert rules.results_to(rules.rules[3]) == ("pacs",)
    assert rules.results_to(rules.fallback) == ("@caller", "research")
    assert rules.fallback.forward == ()
    assert config(one(forward='["@caller"]')).rules[0].forward == ("@caller",)


def test_defaults_of_a_rule_and_of_the_fallback() -> None:
    plain = config(one(forward='["pacs"]'))
    (chest,) = plain.rules
    assert (chest.level, chest.priority, chest.quiet_seconds, chest.stop, chest.discard) == (
        "study",
        "normal",
        None,
        False,
        False,
    )
    assert (chest.analyse, chest.results_to, chest.stops) == ((), None, False)
    assert plain.fallback == node.config.Fallback() and plain.fallback.forward == plain.fallback.analyse == ()


# --- The package keeps its public names; the example config parses and routes as its comments say ---------


def test_public_names_are_importable_from_node_config() -> None:
    old = "AETitle ConfigPath Host IPAddress IPNetwork Loc ModelName Port Seconds Slug NodeSection Limits Completion"
    old += " Workers Peer Analysis Sender Duplicates Logging NodeConfig parse_config load_config"
    new = "Rule Fallback Comparison Operators AllOf AnyOf Not Condition CALLER"
    for name in (old + " " + new).split():
        assert hasattr(node.config, name), name
        assert name in node.config.__all__, name


def test_rules_example_parses_and_routes_as_its_comments_say() -> None:
    example = load_config(REPO / "config" / "examples" / "rules.toml")
    assert [r.name for r in example.rules] == [
        "ct-to-pacs",
        "scouts-stay-here",
        "ct-to-research",
        "chest-ct-nodules",
        "ecg-rhythm",
        "mr-to-neuro-pacs",
    ]
    assert example.models_in_use() == ("lung-nodule-ct", "ecg-rhythm") and example.fallback.forward == ("vna",)

    def matched(ds: Dataset, level: str, facts: Facts = NO_FACTS) -> list[str]:
        return [v.rule.name for v in evaluate_all(example.rules, ds, facts, level=level) if v.matched]

    assert matched(CT, "instance") == ["ct-to-pacs", "ct-to-research"]
    assert matched(BUILT, "instance") == ["ct-to-pacs", "scouts-stay-here"]
    assert matched(BUILT, "series") == []  # a scout is no chest CT to analyse
    thin_chest = _built()
    thin_chest.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    thin_chest.SeriesDescription = "Thorax 1.25"
    assert matched(thin_chest, "series") == ["chest-ct-nodules"]
    assert matched(MR, "study", Facts("MR_NEURO_1")) == ["mr-to-neuro-pacs"]
    ecg = Dataset()
    ecg.Modality = "ECG"
    assert matched(ecg, "series") == ["ecg-rhythm"] and matched(ecg, "instance") == []
    assert matched(MR, "study", Facts("OTHER_MR")) == [] and matched(MR, "instance") == []
