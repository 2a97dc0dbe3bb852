"""Evaluate routing rules on a DICOM header and the association's facts: pure functions, no I/O, no logging.

The rules are the config's (:mod:`node.config.rules`, whose docstring says what each operator means for
multi-valued, empty and missing attributes); here they meet a pydicom ``Dataset`` (a header, read with
``stop_before_pixels``; :func:`required_tags` says which attributes the rules read) and the
:class:`Facts` of the association that brought it. Nothing is evaluated as code.

A :class:`Verdict` says whether a rule matched and why: its :class:`Check` list (each test evaluated, in
words, with the actual value, at most 64 characters) and, when it did not match, the checks that decided
it: for ``all`` the first failing one, for ``any`` every failing one, for ``not`` the negated condition
itself. :func:`evaluate_all` honours ``stop`` (and ``discard``, which implies it) per level: after a
matching stopping rule, the later rules of the same level get a verdict with ``stopped_by`` set, not
evaluated and not matched.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from node.config.rules import LEVELS, AllOf, AnyOf, Comparison, Condition, Not, Operators, Rule

SHOWN = 64  # the longest value a message shows, in characters
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_ORDER: dict[str, Callable[[float, float], bool]] = {
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
}
_SYMBOLS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}
_NUMERIC = (*_ORDER, "between")


@dataclass(frozen=True)
class Facts:
    """What the association says about an instance: the AE titles on either side and the sender's address."""

    calling_ae: str = ""
    called_ae: str = ""
    source_address: str = ""


@dataclass(frozen=True)
class Check:
    """One test evaluated: the condition in words, whether it held, and the actual value (or ``missing``)."""

    condition: str
    passed: bool
    actual: str


@dataclass(frozen=True)
class Verdict:
    """Whether ``rule`` matched, with the checks evaluated and (not matched) the ones that decided it.

    ``stopped_by`` names the earlier rule of the same level that matched and stops the rules after it:
    this rule was not evaluated (``matched`` is false, ``checks`` empty).
    """

    rule: Rule
    matched: bool
    checks: tuple[Check, ...] = ()
    failed: tuple[Check, ...] = ()
    stopped_by: str = ""

    @property
    def evaluated(self) -> bool:
        return not self.stopped_by

    def explain(self) -> str:
        """``matched``, ``not matched: X failed (actual V); ...`` or ``not evaluated: ...``."""
        if self.stopped_by:
            return f"not evaluated: rule '{self.stopped_by}' matched first and stops the {self.rule.level}-level rules"
        if self.matched:
            return "matched"
        return "not matched: " + "; ".join(f"{c.condition} failed (actual {c.actual})" for c in self.failed)


@dataclass(frozen=True)
class _Actual:
    values: tuple[str, ...]  # what operators compare; empty when missing, empty or a sequence
    present: bool  # for exists / missing
    shown: str


_MISSING = _Actual((), False, "missing")


def _short(text: str) -> str:
    return text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"


def _texts(item: Any) -> list[str]:
    if item is None:
        return [""]
    if isinstance(item, bytes):  # an element of unknown VR (private, implicit VR): text if it is ASCII
        try:
            return [part.strip(" \x00") for part in item.decode("ascii").split("\\")]
        except UnicodeDecodeError:
            return [f"<{len(item)} bytes>"]
    return [str(item).strip(" ")]


def _attribute(ds: Dataset, tag: int) -> _Actual:
    meta = getattr(ds, "file_meta", None) if tag >> 16 == 0x0002 else None
    source = meta if meta is not None else ds
    if tag not in source:
        return _MISSING
    element = source[tag]
    if element.VR == "SQ":
        count = len(element.value)
        return _Actual((), count > 0, f"a sequence of {count} item{'' if count == 1 else 's'}")
    value = element.value
    items = list(value) if isinstance(value, MultiValue | list | tuple) else [value]
    texts = tuple(text for item in items for text in _texts(item))
    if not any(texts):
        return _Actual((), False, "empty")
    return _Actual(texts, True, _short("\\".join(texts)))


def _fact(text: str) -> _Actual:
    text = text.strip(" ")
    return _Actual((text,), True, _short(text)) if text else _MISSING


def _number(text: str) -> float | None:
    return float(text) if _NUMBER.fullmatch(text) else None


def _single(values: tuple[str, ...]) -> float | None:
    return _number(values[0]) if len(values) == 1 else None


def _equals(expected: str | float, values: tuple[str, ...]) -> bool:
    if not values:
        return False
    if isinstance(expected, str):
        return "\\".join(values) == expected
    return _single(values) == expected


def _contains(expected: str | float, values: tuple[str, ...]) -> bool:
    if isinstance(expected, str):
        return expected in values if len(values) > 1 else expected in values[0]
    return any(_number(value) == expected for value in values)


def _passes(test: Operators, actual: _Actual) -> bool:
    name, expected = test.operator, test.value
    if name in ("exists", "missing"):
        return actual.present == (name == "exists")
    if name == "not_equals":
        return not _equals(expected, actual.values)
    if not actual.values:
        return False
    if name == "equals":
        return _equals(expected, actual.values)
    if name == "one_of":
        return any(_equals(item, actual.values) for item in expected)
    if name == "regex":
        return test.pattern.search("\\".join(actual.values)) is not None
    if name == "contains":
        return _contains(expected, actual.values)
    number = _single(actual.values)
    if number is None:
        return False
    if name == "between":
        return bool(expected[0] <= number <= expected[1])
    return _ORDER[name](number, expected)


def _num(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else repr(value)


def _shown(value: str | float) -> str:
    return repr(_short(value)) if isinstance(value, str) else _num(value)


def _phrase(test: Operators) -> str:
    name, value = test.operator, test.value
    words = {"equals": "equals", "not_equals": "does not equal", "regex": "matches", "contains": "contains"}
    if name in words:
        return f"{words[name]} {_shown(value)}"
    if name == "one_of":
        return "is one of " + ", ".join(_shown(item) for item in value)
    if name == "exists":
        return "exists"
    if name == "missing":
        return "is missing"
    if name == "between":
        return f"between {_num(value[0])} and {_num(value[1])}"
    return f"{_SYMBOLS[name]} {_num(value)}"


def describe(condition: Condition) -> str:
    """A condition in words: ``(Modality equals 'CT' and SliceThickness between 0.5 and 2.5)``."""
    if isinstance(condition, AllOf):
        return "(" + " and ".join(describe(item) for item in condition.all) + ")"
    if isinstance(condition, AnyOf):
        return "(" + " or ".join(describe(item) for item in condition.any) + ")"
    if isinstance(condition, Not):
        return f"not {describe(condition.not_)}"
    return f"{condition.label} {_phrase(condition.test)}"


def _leaf(test: Comparison, ds: Dataset, facts: Facts) -> Check:
    actual = _attribute(ds, test.tag) if test.attribute is not None else _fact(getattr(facts, test.subject))
    shown = actual.shown
    if test.test.operator in _NUMERIC and actual.values and _single(actual.values) is None:
        shown += " (not a single number)"
    return Check(describe(test), _passes(test.test, actual), shown)


def _evaluate(condition: Condition, ds: Dataset, facts: Facts) -> tuple[bool, list[Check], list[Check]]:
    """Whether ``condition`` holds, the checks evaluated, and those that made it fail."""
    checks: list[Check] = []
    if isinstance(condition, AllOf):
        for item in condition.all:
            passed, inner, failed = _evaluate(item, ds, facts)
            checks += inner
            if not passed:
                return False, checks, failed
        return True, checks, []
    if isinstance(condition, AnyOf):
        failures: list[Check] = []
        for item in condition.any:
            passed, inner, failed = _evaluate(item, ds, facts)
            checks += inner
            if passed:
                return True, checks, []
            failures += failed
        return False, checks, failures
    if isinstance(condition, Not):
        passed, inner, _ = _evaluate(condition.not_, ds, facts)
        check = Check(describe(condition), not passed, ", ".join(c.actual for c in inner))
        return check.passed, [check], [] if check.passed else [check]
    check = _leaf(condition, ds, facts)
    return check.passed, [check], [] if check.passed else [check]


def evaluate(rule: Rule, ds: Dataset, facts: Facts) -> Verdict:
    """Whether ``rule``'s ``when`` holds for ``ds`` and ``facts`` (a rule without ``when`` always matches)."""
    if rule.when is None:
        return Verdict(rule, True)
    passed, checks, failed = _evaluate(rule.when, ds, facts)
    return Verdict(rule, passed, tuple(checks), tuple(failed))


def evaluate_all(rules: Sequence[Rule], ds: Dataset, facts: Facts, level: str | None = None) -> list[Verdict]:
    """A verdict per rule (of ``level`` only, when given), in order.

    After a rule that matched and stops (``stop`` or ``discard``), the later rules of its level are not
    evaluated: their verdicts have ``stopped_by`` set to its name. Rules of other levels go on.
    """
    if level is not None and level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    stopped: dict[str, str] = {}
    verdicts: list[Verdict] = []
    for rule in rules:
        if level is not None and rule.level != level:
            continue
        if rule.level in stopped:
            verdicts.append(Verdict(rule, False, stopped_by=stopped[rule.level]))
            continue
        verdict = evaluate(rule, ds, facts)
        verdicts.append(verdict)
        if verdict.matched and rule.stops:
            stopped[rule.level] = rule.name
    return verdicts


def _tags(condition: Condition) -> Iterable[int]:
    if isinstance(condition, AllOf | AnyOf):
        for item in condition.all if isinstance(condition, AllOf) else condition.any:
            yield from _tags(item)
    elif isinstance(condition, Not):
        yield from _tags(condition.not_)
    elif condition.attribute is not None:
        yield condition.tag


def required_tags(rules: Iterable[Rule]) -> tuple[int, ...]:
    """The tags the rules' conditions read, sorted (for ``dcmread(..., specific_tags=...)``)."""
    return tuple(sorted({tag for rule in rules if rule.when is not None for tag in _tags(rule.when)}))
