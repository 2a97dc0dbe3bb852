"""The node's configuration: one frozen pydantic model tree, read once from a TOML file.

:func:`load_config` is the only place the node reads settings (no other file, no environment); every
key is documented in ``config/node.toml``. Unknown keys are refused everywhere. Problems are reported
together, one line each (the file, the key path with list items by 0-based index, what is wrong and what
is allowed); rules between keys are checked once those keys are valid themselves::

    node.toml: peers.1.port: must be 1..65535, not 70000
    node.toml: analysis.send_results_to: 'pacs' is not a peer (peers: archive)

Relative paths (``node.data_dir``, ``analysis.models_dir``) start at the config file's folder.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic.functional_validators import ModelWrapValidatorHandler
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ValidationInfo

from node.errors import ConfigError
from node.paths import default_models_dir
from node.validation import format_validation_error

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
    """Base of every section: frozen, strict, and an unknown key is reported with the keys allowed there."""

    model_config = _STRICT
    # (key, floor key) pairs: the value of the first must not be below that of the second.
    _not_below: ClassVar[tuple[tuple[str, str], ...]] = ()

    @model_validator(mode="wrap")
    @classmethod
    def _unknown_keys(cls, data: Any, handler: ModelWrapValidatorHandler[Self]) -> Self:
        if not isinstance(data, dict):
            return handler(data)
        unknown = [key for key in data if key not in cls.model_fields]
        if not unknown:
            return handler(data)
        allowed = ", ".join(cls.model_fields)
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


class NodeSection(_Section):
    """``[node]``: who we are on the network and where our data lives."""

    ae_title: AETitle
    bind: IPAddress = "127.0.0.1"
    port: Port = 11112
    data_dir: ConfigPath

    # Below data_dir: spool/ (received instances), index.sqlite3 (studies, series, instances), jobs.sqlite3
    # (the job store shared with the workers), outbox/ (waiting to be sent), logs/.
    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def index_path(self) -> Path:
        return self.data_dir / "index.sqlite3"

    @property
    def jobs_path(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def outbox_dir(self) -> Path:
        return self.data_dir / "outbox"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"


class Limits(_Section):
    """``[limits]``: associations, timeouts, PDU size and the free-disk floor."""

    max_associations: Annotated[int, _between(1, 1000)] = 10
    acse_timeout_s: Seconds = 30.0
    dimse_timeout_s: Seconds = 60.0
    network_timeout_s: Seconds = 60.0
    max_pdu: Annotated[int, _check(lambda v: v == 0 or 4096 <= v < 2**32, _PDU)] = 0
    min_free_disk_mb: Annotated[int, _between(0, 2**40)] = 1024
    drain_timeout_s: Seconds = 30.0


class Completion(_Section):
    """``[completion]``: when a study counts as complete, and what a late instance does."""

    _not_below = (("max_wait_seconds", "quiet_seconds"),)
    quiet_seconds: Seconds = 10.0
    max_wait_seconds: Seconds = 600.0
    late_instances: Literal["reanalyse", "ignore"] = "reanalyse"


class Workers(_Section):
    """``[workers]``: analysis worker processes and their job leases and retries."""

    _not_below = (("backoff_max_s", "backoff_initial_s"),)
    count: Annotated[int, _between(0, 64)] = 1
    threads: Annotated[int, _between(0, 256)] = 0
    lease_seconds: Seconds = 300.0
    max_attempts: Annotated[int, _between(1, 100)] = 5
    backoff_initial_s: Seconds = 30.0
    backoff_max_s: Seconds = 3600.0


class Peer(_Section):
    """``[[peers]]``: a DICOM node we send to (``host`` + ``port``), that may send to us (``allow_store``), or both."""

    name: Slug
    ae_title: AETitle
    host: Host | None = None
    port: Port | None = None
    allow_store: bool = False
    addresses: Annotated[tuple[Annotated[IPNetwork, BeforeValidator(_network)], ...], Field(strict=False)] = ()

    def _relations(self) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        if (self.host is None) != (self.port is None):
            key = "port" if self.port is None else "host"
            problems.append(((key,), "missing: give host and port to send to this peer, or neither"))
        if self.addresses and not self.allow_store:
            problems.append((("addresses",), "only restricts a peer that may send to us: set allow_store = true"))
        return problems

    @property
    def can_receive(self) -> bool:
        """We can send to this peer (it has a host and a port)."""
        return self.host is not None and self.port is not None

    def accepts_from(self, address: str) -> bool:
        """Whether this peer may send to us from ``address`` (any address when ``addresses`` is empty)."""
        if not self.allow_store or not self.addresses:
            return self.allow_store
        return _is_ip(address) and any(ipaddress.ip_address(address) in net for net in self.addresses)


class Analysis(_Section):
    """``[analysis]``: which models run and where their results go."""

    models: Annotated[tuple[ModelName, ...], Field(strict=False)] = ("lung-nodule-ct",)
    models_dir: ConfigPath = Field(default_factory=default_models_dir)
    send_results_to: Annotated[tuple[str, ...], Field(strict=False)] = ()

    def _relations(self) -> list[tuple[Loc, str]]:
        lists: dict[str, tuple[str, ...]] = {"models": self.models, "send_results_to": self.send_results_to}
        return [
            ((key,), f"'{twice}' is listed twice")
            for key, values in lists.items()
            for twice in sorted({v for v in values if values.count(v) > 1})
        ]


class Sender(_Section):
    """``[sender]``: retries of outbound C-STORE before a send is parked as failed."""

    _not_below = (("retry_max_s", "retry_initial_s"),)
    retry_initial_s: Seconds = 30.0
    retry_max_s: Seconds = 3600.0
    give_up_after_hours: Seconds = 24.0
    associations_per_peer: Annotated[int, _between(1, 16)] = 2


class Duplicates(_Section):
    """``[duplicates]``: what a second copy of a stored SOP Instance UID does."""

    policy: Literal["keep-first", "replace"] = "keep-first"


class Logging(_Section):
    """``[logging]``."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class NodeConfig(_Section):
    """The whole configuration. Build it with :func:`load_config` (or :func:`parse_config` for text)."""

    node: NodeSection
    limits: Limits = Limits()
    completion: Completion = Completion()
    workers: Workers = Workers()
    peers: Annotated[tuple[Peer, ...], Field(strict=False)] = ()
    analysis: Analysis = Field(default_factory=Analysis)
    sender: Sender = Sender()
    duplicates: Duplicates = Duplicates()
    logging: Logging = Logging()

    def _relations(self) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        named: dict[str, Peer] = {}
        storing: dict[str, Peer] = {}
        for i, peer in enumerate(self.peers):
            if peer.name in named:
                problems.append((("peers", i, "name"), f"'{peer.name}' is already a peer name; names must be unique"))
            other = storing.get(peer.ae_title) if peer.allow_store else None
            if other is not None:
                why = f"'{peer.ae_title}' is already the AE title of peer '{other.name}'"
                problems.append((("peers", i, "ae_title"), f"{why}; peers that may send to us need distinct ones"))
            named.setdefault(peer.name, peer)
            if peer.allow_store:
                storing.setdefault(peer.ae_title, peer)
        known = ", ".join(named) or "none"
        for name in self.analysis.send_results_to:
            target = named.get(name)
            if target is None:
                problems.append((("analysis", "send_results_to"), f"'{name}' is not a peer (peers: {known})"))
            elif not target.can_receive:
                problems.append((("analysis", "send_results_to"), f"peer '{name}' has no host and port to send to"))
        return problems

    def peer(self, name: str) -> Peer:
        """The peer called ``name``; ``KeyError`` if there is none."""
        for peer in self.peers:
            if peer.name == name:
                return peer
        raise KeyError(name)


def parse_config(text: str, source: str = "node.toml", config_dir: Path | None = None) -> NodeConfig:
    """Parse and validate config text; ``source`` names it in messages, relative paths start at ``config_dir``.

    Raises
    ------
    ConfigError
        Not TOML, or invalid: one line per problem, ``source: key.path: what is wrong and what is allowed``.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    context = {"config_dir": config_dir if config_dir is not None else Path(".")}
    try:
        return NodeConfig.model_validate(data, context=context)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, _problems(_readable(exc.errors())))) from None


def load_config(path: Path) -> NodeConfig:
    """Read and validate the config file at ``path``; relative paths in it are taken from its folder.

    Raises
    ------
    ConfigError
        Missing, unreadable, not UTF-8 TOML, or invalid (one line per problem, see :func:`parse_config`).
    """
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{source}: is a folder, not a config file") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start}); a TOML file is UTF-8") from None
    return parse_config(text, source, path.parent)
