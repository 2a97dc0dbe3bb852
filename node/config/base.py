"""The building blocks of the config tree: the strict section base class, value types and error helpers.

Every section is a :class:`_Section` (frozen, strict, unknown keys refused with the keys allowed there).
A section states rules between its own keys in ``_relations``; a problem is a ``(key path, message)``
pair and :func:`_problems` turns a list of them into one ``ValidationError`` that pydantic nests under the
section's own path. :func:`_readable` rewrites pydantic's messages in a TOML user's words.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.functional_validators import ModelWrapValidatorHandler
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ValidationInfo

Loc = tuple[str | int, ...]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Strict: TOML already has types, so "yes" is not a bool and "10" is not an int (floats accept ints).
_STRICT = ConfigDict(frozen=True, extra="forbid", strict=True)


def _problems(items: Iterable[tuple[Loc, str]]) -> ValidationError:
    """A ValidationError with one error per ``(key path, message)``; pydantic nests it under the caller's path."""
    custom = PydanticCustomError
    details = [InitErrorDetails(type=custom("config", "{p}", {"p": msg}), loc=loc, input=None) for loc, msg in items]
    return ValidationError.from_exception_data("config", details)


_KINDS = {"model_type": "a table", "dict_type": "a table", "tuple_type": "an array", "list_type": "an array"}
_KINDS |= {"int_type": "an integer", "float_type": "a number", "bool_type": "true or false", "string_type": "a string"}


def _toml(value: Any) -> str:
    """How a TOML user would name ``value``: a table, an array, or the value as TOML writes it."""
    return {dict: "a table", list: "an array", bool: str(value).lower()}.get(type(value), repr(value))


def _written(value: Any) -> str:
    """``value`` as written in TOML, arrays included: ``[2.5, 0.5]``, ``'CT'``, ``true``, ``a table``."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_written(item) for item in value) + "]"
    return _toml(value)


def _readable(errors: Iterable[ErrorDetails]) -> list[tuple[Loc, str]]:
    """pydantic's messages in a TOML user's words: ``must be an integer, not '2'``, ``missing (required)``."""
    problems: list[tuple[Loc, str]] = []
    for e in errors:
        message = e["msg"]
        if e["type"] in _KINDS:
            message = f"must be {_KINDS[e['type']]}, not {_toml(e['input'])}"
        elif e["type"] == "missing":
            message = "missing (required)"
        elif message.startswith("Input should be "):
            message = f"must be {message.removeprefix('Input should be ')}, not {_toml(e['input'])}"
        problems.append((tuple(e["loc"]), message))
    return problems


class _Section(BaseModel):
    """Base of every section: frozen, strict, and an unknown key is reported with the keys allowed there.

    A key is a field's alias where it has one (``not`` in a condition), else the field's name.
    """

    model_config = _STRICT
    # (key, floor key) pairs: the value of the first must not be below that of the second.
    _not_below: ClassVar[tuple[tuple[str, str], ...]] = ()

    @model_validator(mode="wrap")
    @classmethod
    def _unknown_keys(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        if not isinstance(data, dict):
            return handler(data)
        keys = [field.alias or name for name, field in cls.model_fields.items()]
        unknown = [key for key in data if key not in keys]
        if not unknown:
            return handler(data)
        allowed = ", ".join(keys)
        problems: list[tuple[Loc, str]] = [((key,), f"unknown key (allowed here: {allowed})") for key in unknown]
        try:
            handler({k: v for k, v in data.items() if k not in unknown})
        except ValidationError as exc:
            problems += _readable(exc.errors())
        raise _problems(problems)

    @model_validator(mode="after")
    def _check_relations(self) -> Self:
        problems: list[tuple[Loc, str]] = [
            ((key,), f"must be >= {floor} ({getattr(self, floor):g}), not {getattr(self, key):g}")
            for key, floor in self._not_below
            if getattr(self, key) < getattr(self, floor)
        ]
        problems += self._relations()
        if problems:
            raise _problems(problems)
        return self

    def _relations(self) -> list[tuple[Loc, str]]:  # problems between fields: (key path, message)
        return []


def _check(ok: Callable[[Any], object], allowed: str, before: bool = False) -> Any:
    """A validator (after pydantic's own, or ``before`` it) refusing a value for which ``ok`` is false."""

    def check(value: Any) -> Any:
        if not ok(value):
            raise ValueError(f"{allowed}, not {value!r}")
        return value

    return BeforeValidator(check) if before else AfterValidator(check)


def _between(low: int, high: int) -> Any:
    return _check(lambda v: low <= v <= high, f"must be {low}..{high}")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _ae_title(value: str) -> str:
    """DICOM AE: 1..16 printable ASCII characters but backslash; spaces at either end do not count (padding)."""
    title = value.strip(" ")
    if not title:
        raise ValueError("must not be empty or all spaces (an AE title has 1..16 characters)")
    if len(title) > 16:
        raise ValueError(f"'{title}' has {len(title)} characters; an AE title has at most 16")
    for char in title:
        if char == "\\" or not " " <= char <= "~":
            what = f"'{title}' contains a backslash" if char == "\\" else f"{title!r} contains {char!r}"
            raise ValueError(f"{what}; an AE title has printable ASCII characters but backslash")
    return title


def _network(value: Any) -> IPNetwork:
    why = ""
    try:
        if isinstance(value, str):
            return ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        why = f" ({exc})" if "host bits" in str(exc) else ""
    raise ValueError(f"must be an IP address or network such as '10.1.2.3' or '10.1.2.0/24', not {value!r}{why}")


def _resolve(value: Path, info: ValidationInfo) -> Path:
    """A relative path is taken from the config file's folder (context ``config_dir``; else the current one)."""
    base = info.context.get("config_dir", ".") if isinstance(info.context, dict) else "."
    return (Path(base) / value).resolve()


Port = Annotated[int, _between(1, 65535)]
Seconds = Annotated[float, _check(lambda v: v > 0, "must be > 0")]
AETitle = Annotated[str, AfterValidator(_ae_title)]
IPAddress = Annotated[str, _check(_is_ip, "must be an IP address such as '127.0.0.1' or '0.0.0.0' (all interfaces)")]
Host = Annotated[str, _check(lambda v: re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9.:-]*", v), "must be a host name or IP")]
_PDU = f"must be 0 (no limit) or 4096..{2**32 - 1}"
_SLUG = "must be 1..64 of a-z, 0-9, '-', '_', starting with a letter or digit"
Slug = Annotated[str, _check(lambda v: re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", v), _SLUG)]
ModelName = Annotated[str, _check(lambda v: re.fullmatch(r"[a-z0-9][a-z0-9._-]*", v), "must be a model folder name")]
_NOT_EMPTY = _check(lambda v: v != "", "must be a folder path", before=True)
ConfigPath = Annotated[Path, Field(strict=False), _NOT_EMPTY, AfterValidator(_resolve)]
