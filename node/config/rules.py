"""Routing rules: ``[[rules]]`` (conditions on DICOM attributes and association facts -> actions) and ``[fallback]``.

This module is the schema; :mod:`node.routing.match` evaluates it. Rules are data: nothing is ever
evaluated as code. A rule::

    [[rules]]
    name = "chest-ct"          # required, unique: 1..64 of a-z, 0-9, '-', '_'
    level = "study"            # "instance" (as each instance arrives), "series" or "study" (after completion)
    priority = "urgent"        # "urgent", "normal" (default) or "low": the queues serve urgent first
    quiet_seconds = 30         # series/study level only: overrides completion.quiet_seconds
    stop = true                # when it matches, later rules of the same level are not evaluated
    when = { all = [ { attribute = "Modality", equals = "CT" }, { calling_ae = { equals = "CT1" } } ] }
    forward = ["pacs", "@caller"]  # peers that can receive; "@caller": the peer whose AE title called us
    analyse = ["lung-nodule-ct"]   # series/study level only: model folder names
    results_to = ["pacs"]      # only with analyse; default: analysis.send_results_to
    discard = false            # true: store, and nothing else (no forward, no analysis; implies stop)

A rule must do something: forward, analyse or discard. ``when`` left out matches everything. Whether the
peer behind ``"@caller"`` (the allowed sender whose AE title is the calling AE) can receive is checked when
routing, not here. ``stop`` and ``discard`` act within a level: instance-level rules are evaluated as
instances arrive, series- and study-level ones after completion, each level in the order written.

Conditions
    A condition is a table: ``{ all = [...] }`` (every one; non-empty), ``{ any = [...] }`` (at least one;
    non-empty), ``{ not = {...} }``, nestable, or a test with exactly one subject and one operator:
    ``{ attribute = "Modality", equals = "CT" }`` (a keyword from the DICOM dictionary, or a tag written
    ``"(0018,0050)"`` or ``"00180050"``; group 0002 is read from the file meta) or an association fact with
    the operator in its own table: ``{ calling_ae = { equals = "CT1" } }``, ``called_ae``, ``source_address``.

Operators and how values compare (the reference for :mod:`node.routing.match`)
    An attribute's value is its list of values (a multi-valued attribute such as ImageType
    ``ORIGINAL\\PRIMARY\\AXIAL`` has three), each as text with leading and trailing spaces removed; its
    *joined* value is that list joined with a backslash. Text compares case-sensitively (use ``regex`` with
    ``(?i)`` to ignore case); a number given in the rule compares numerically.

    - ``equals``: a string equals the joined value; a number equals the value of a single-valued attribute.
    - ``not_equals``: exactly ``not equals``: true for a missing attribute too.
    - ``one_of``: ``equals`` one of a non-empty list (strings and numbers may be mixed).
    - ``regex``: Python regular expression, compiled when the config loads, searched in the joined value.
    - ``contains``: a string is one of the values of a multi-valued attribute, or a substring of a
      single value; a number is (numerically) one of the values.
    - ``exists = true``: present with a non-empty value; ``missing = true``: absent or empty.
    - ``lt``, ``le``, ``gt``, ``ge``, ``between = [low, high]`` (inclusive, low <= high): the attribute has
      exactly one value and it is a number; otherwise the test is false (the value is shown).

    A missing or empty attribute makes every operator false but ``missing`` and ``not_equals``; so does a
    sequence, which has no value to compare, except that ``exists`` / ``missing`` say whether it has items.
    An empty fact (no calling AE known) counts as missing; AE titles lose their padding spaces.

``[fallback]``
    ``forward``, ``analyse``, ``results_to`` for a study that no study- or series-level rule matched (a
    matching ``discard`` rule counts as matched). Only with ``[[rules]]``.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, PlainValidator, PrivateAttr, SerializeAsAny
from pydicom.datadict import keyword_dict, keyword_for_tag

from node.config.base import Loc, ModelName, Seconds, Slug, _check, _Section, _toml, _written

CALLER = "@caller"
LEVELS = ("instance", "series", "study")
FACTS = ("calling_ae", "called_ae", "source_address")
OPERATORS = (
    *("equals", "not_equals", "one_of", "regex", "contains", "exists", "missing"),
    *("lt", "le", "gt", "ge", "between"),
)
_COMBINATORS = ("all", "any", "not")
_SUBJECTS = ("attribute", *FACTS)
_TAG = re.compile(r"\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)|([0-9A-Fa-f]{8})")
_EXAMPLE = '{ attribute = "Modality", equals = "CT" }'

Level = Literal["instance", "series", "study"]
Priority = Literal["urgent", "normal", "low"]
Value = str | int | float


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _value(value: Any) -> Value:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"must be a string or a number, not {_toml(value)}")
    return value


def _values(value: Any) -> tuple[Value, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"must be a non-empty array of strings or numbers, not {_written(value)}")
    return tuple(_value(item) for item in value)


def _range(value: Any) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2 or not all(_is_number(v) for v in value):
        raise ValueError(f"must be [low, high], two numbers, not {_written(value)}")
    if value[0] > value[1]:
        raise ValueError(f"must be [low, high] with low <= high, not {_written(value)}")
    return float(value[0]), float(value[1])


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, not {_toml(value)}")
    return value


def _regex(value: Any) -> str:
    try:
        re.compile(_text(value))
    except re.error as exc:
        raise ValueError(f"not a valid regular expression: {exc} (in {value!r})") from None
    return str(value)


def _flag(value: Any, hint: str) -> bool:
    if value is not True:
        raise ValueError(f"must be true, not {_toml(value)} ({hint})")
    return True


def attribute_tag(text: str) -> int:
    """The tag an ``attribute`` names: a DICOM keyword, ``"(gggg,eeee)"`` or ``"ggggeeee"`` (hex digits).

    Raises ``ValueError`` naming ``text`` (with the closest keyword, if one is close) when it is neither.
    """
    tag = keyword_dict.get(text)
    if tag is not None:
        return tag
    found = _TAG.fullmatch(text)
    if found is None:
        close = difflib.get_close_matches(text, keyword_dict, n=1, cutoff=0.8)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ValueError(
            f"'{text}' is not a DICOM keyword or tag ({hint}a keyword such as 'SliceThickness', "
            "or a tag written '(0018,0050)' or '00180050')"
        )
    group, element, whole = found.groups()
    return int(whole, 16) if whole else int(group + element, 16)


def attribute_label(tag: int) -> str:
    """How messages name a tag: its keyword, or ``(gggg,eeee)`` for a private or unknown one."""
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _attribute(value: Any) -> str:
    attribute_tag(_text(value))
    return str(value)


def _table(value: Any) -> Any:
    if not isinstance(value, dict | Operators):
        raise ValueError(f'must be a table with one operator such as {{ equals = "CT1" }}, not {_toml(value)}')
    return value


AnyValue = Annotated[Value, BeforeValidator(_value)]
Flag = Annotated[bool, BeforeValidator(lambda v: _flag(v, "to test absence, write missing = true"))]
MissingFlag = Annotated[bool, BeforeValidator(lambda v: _flag(v, "to test presence, write exists = true"))]


class Operators(_Section):
    """One operator and its value; as a table of its own it is a fact's test: ``{ equals = "CT1" }``."""

    equals: AnyValue | None = None
    not_equals: AnyValue | None = None
    one_of: Annotated[tuple[Value, ...], Field(strict=False), BeforeValidator(_values)] | None = None
    regex: Annotated[str, BeforeValidator(_regex)] | None = None
    contains: AnyValue | None = None
    exists: Flag | None = None
    missing: MissingFlag | None = None
    lt: float | None = None
    le: float | None = None
    gt: float | None = None
    ge: float | None = None
    between: Annotated[tuple[float, float], Field(strict=False), BeforeValidator(_range)] | None = None
    _pattern: re.Pattern[str] | None = PrivateAttr(None)

    def model_post_init(self, context: Any, /) -> None:
        if self.regex is not None:
            self._pattern = re.compile(self.regex)

    def _given(self) -> list[str]:
        return [name for name in OPERATORS if getattr(self, name) is not None]

    def _relations(self) -> list[tuple[Loc, str]]:
        given = self._given()
        if not given:
            return [((), f"no operator: give one of {', '.join(OPERATORS)}")]
        return [
            ((name,), f"one operator per test, not both {given[0]} and {name} (combine tests with all = [...])")
            for name in given[1:]
        ]

    @property
    def operator(self) -> str:
        """The operator's name: ``equals``, ``between``, ..."""
        return self._given()[0]

    @property
    def value(self) -> Any:
        """The operator's value: a string or number, a tuple of them, ``(low, high)`` or ``True``."""
        return getattr(self, self.operator)

    @property
    def pattern(self) -> re.Pattern[str]:
        """The ``regex``, compiled when the config was loaded (``ValueError`` for another operator)."""
        if self._pattern is None:
            raise ValueError(f"operator {self.operator} has no regular expression")
        return self._pattern


Fact = Annotated[Operators, BeforeValidator(_table)]


class _Subjects(_Section):
    attribute: Annotated[str, BeforeValidator(_attribute)] | None = None
    calling_ae: Fact | None = None
    called_ae: Fact | None = None
    source_address: Fact | None = None


class Comparison(Operators, _Subjects):
    """A test: one subject (an attribute, or a fact with its own operator table) and one operator."""

    _tag: int = PrivateAttr(0)

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        if self.attribute is not None:
            self._tag = attribute_tag(self.attribute)

    def _relations(self) -> list[tuple[Loc, str]]:
        subjects = [name for name in _SUBJECTS if getattr(self, name) is not None]
        if not subjects:
            what = "attribute = KEYWORD_OR_TAG and an operator, or calling_ae, called_ae or source_address"
            return [((), f"missing: say what to test: {what} = {{ operator = value }}")]
        if len(subjects) > 1:
            why = f"one subject per test, not both {subjects[0]} and {subjects[1]}"
            return [((subjects[1],), f"{why} (combine tests with all = [...])")]
        if subjects[0] == "attribute":
            return super()._relations()
        fact = subjects[0]
        return [
            ((name,), f"with {fact}, the operator goes in its table: {fact} = {{ {name} = ... }}")
            for name in self._given()
        ]

    @property
    def subject(self) -> str:
        """``attribute`` or the fact's name (``calling_ae``, ``called_ae``, ``source_address``)."""
        return next(name for name in _SUBJECTS if getattr(self, name) is not None)

    @property
    def test(self) -> Operators:
        """The operator table: this test itself for an attribute, the fact's table for a fact."""
        table = getattr(self, self.subject)
        return table if isinstance(table, Operators) else self

    @property
    def tag(self) -> int:
        """The attribute's tag (0 for a fact)."""
        return self._tag

    @property
    def label(self) -> str:
        """The subject in messages: the attribute's keyword (also when written as a tag), or the fact's name."""
        return attribute_label(self._tag) if self.attribute is not None else self.subject


def _non_empty(value: tuple[Any, ...]) -> tuple[Any, ...]:
    if not value:
        raise ValueError(f"must not be empty: list one or more conditions such as {_EXAMPLE}")
    return value


class AllOf(_Section):
    """``{ all = [...] }``: every condition holds (evaluated in order, up to the first that does not)."""

    all: Annotated[tuple[Condition, ...], Field(strict=False), AfterValidator(_non_empty)]


class AnyOf(_Section):
    """``{ any = [...] }``: at least one condition holds (evaluated in order, up to the first that does)."""

    any: Annotated[tuple[Condition, ...], Field(strict=False), AfterValidator(_non_empty)]


class Not(_Section):
    """``{ not = {...} }``: the condition does not hold."""

    not_: Condition = Field(alias="not")


def _condition(value: Any) -> AllOf | AnyOf | Not | Comparison:
    """Validate one condition table as the model its keys call for: all, any, not, or a test."""
    if isinstance(value, AllOf | AnyOf | Not | Comparison):
        return value
    if not isinstance(value, dict):
        raise ValueError(f"must be a table such as {_EXAMPLE}, not {_toml(value)}")
    kinds = [key for key in (*_COMBINATORS, *_SUBJECTS) if key in value]
    if len(kinds) > 1 and kinds[0] in _COMBINATORS:
        raise ValueError(
            f"has both {kinds[0]} and {kinds[1]}: a condition is one of all = [...], any = [...], not = {{...}} "
            "or a test (attribute, calling_ae, called_ae or source_address)"
        )
    models: dict[str, type[AllOf | AnyOf | Not]] = {"all": AllOf, "any": AnyOf, "not": Not}
    model = models.get(kinds[0], Comparison) if kinds else Comparison
    return model.model_validate(value)


Condition = Annotated[AllOf | AnyOf | Not | Comparison, PlainValidator(_condition), SerializeAsAny()]
for _model in (AllOf, AnyOf, Not):
    _model.model_rebuild()

Destination = Annotated[
    str,
    _check(lambda v: v == CALLER or re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", v), "must be a peer name or '@caller'"),
]
Destinations = Annotated[tuple[Destination, ...], Field(strict=False)]
Models = Annotated[tuple[ModelName, ...], Field(strict=False)]


def _actions(section: Fallback | Rule) -> list[tuple[Loc, str]]:
    lists = {"forward": section.forward, "analyse": section.analyse, "results_to": section.results_to or ()}
    problems: list[tuple[Loc, str]] = [
        ((key,), f"'{twice}' is listed twice")
        for key, values in lists.items()
        for twice in sorted({v for v in values if values.count(v) > 1})
    ]
    if section.results_to is not None and not section.analyse:
        problems.append((("results_to",), "only with analyse = [...]: it says where the analysis results go"))
    return problems


class Fallback(_Section):
    """``[fallback]``: what happens to a study that no study- or series-level rule matched."""

    forward: Destinations = ()
    analyse: Models = ()
    results_to: Destinations | None = None

    def _relations(self) -> list[tuple[Loc, str]]:
        return _actions(self)


class Rule(_Section):
    """``[[rules]]``: when a DICOM object matches ``when``, do the actions (see the module docstring)."""

    name: Slug
    level: Level = "study"
    priority: Priority = "normal"
    quiet_seconds: Seconds | None = None
    stop: bool = False
    when: Condition | None = None
    forward: Destinations = ()
    analyse: Models = ()
    results_to: Destinations | None = None
    discard: bool = False

    def _relations(self) -> list[tuple[Loc, str]]:
        problems = _actions(self)
        for key in ("forward", "analyse"):
            if self.discard and getattr(self, key):
                problems.append(((key,), "must be empty with discard = true (a discarded object is only stored)"))
        instance = "an instance-level rule acts on each instance as it arrives, without waiting for completion"
        if self.level == "instance" and self.analyse:
            problems.append((("analyse",), f"only at level 'series' or 'study': {instance}"))
        if self.level == "instance" and self.quiet_seconds is not None:
            problems.append((("quiet_seconds",), f"only at level 'series' or 'study': {instance}"))
        if not (self.forward or self.analyse or self.discard):
            problems.append(((), "does nothing: give forward = [...], analyse = [...] or discard = true"))
        return problems

    @property
    def stops(self) -> bool:
        """Whether a match ends the evaluation of the later rules of its level (``stop`` or ``discard``)."""
        return self.stop or self.discard
