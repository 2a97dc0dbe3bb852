"""The whole configuration, :class:`NodeConfig`, and reading it: :func:`parse_config`, :func:`load_config`."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError

from node.config.base import Loc, _problems, _readable, _Section
from node.config.notify import NotifyTargets
from node.config.rules import CALLER, Fallback, Rule
from node.config.sections import (
    Analysis,
    Completion,
    Duplicates,
    Limits,
    Logging,
    NodeSection,
    Peer,
    Receive,
    Retention,
    Sender,
    Workers,
)
from node.config.web import Web
from node.errors import ConfigError
from node.validation import format_validation_error

MODELS_WITH_RULES = (
    "with [[rules]], say which studies each model analyses with analyse = [...] in a rule (or [fallback]); "
    "analysis.models applies only to configs without rules"
)


class NodeConfig(_Section):
    """The whole configuration. Build it with :func:`load_config` (or :func:`parse_config` for text)."""

    node: NodeSection
    limits: Limits = Limits()
    receive: Receive = Field(default_factory=Receive)
    completion: Completion = Completion()
    workers: Workers = Workers()
    peers: Annotated[tuple[Peer, ...], Field(strict=False)] = ()
    analysis: Analysis = Field(default_factory=Analysis)
    rules: Annotated[tuple[Rule, ...], Field(strict=False)] = ()
    fallback: Fallback = Fallback()
    sender: Sender = Sender()
    duplicates: Duplicates = Duplicates()
    retention: Retention = Retention()
    logging: Logging = Logging()
    notify: NotifyTargets = ()  # [[notify]]: webhook and HL7 targets told about results (node.config.notify)
    web: Web = Web()

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
        problems += _destinations(("analysis", "send_results_to"), self.analysis.send_results_to, named)
        target, floor = self.retention.free_disk_target_mb, self.limits.min_free_disk_mb
        if target and target <= floor:
            # At or below the floor, stores are already refused before retention would start freeing space.
            why = f"must be 0 (off) or greater than limits.min_free_disk_mb ({floor}), not {target}"
            problems.append((("retention", "free_disk_target_mb"), why))
        return problems + self._rule_relations(named)

    def _rule_relations(self, named: dict[str, Peer]) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        seen: set[str] = set()
        for i, rule in enumerate(self.rules):
            if rule.name in seen:
                problems.append((("rules", i, "name"), f"'{rule.name}' is already a rule name; names must be unique"))
            seen.add(rule.name)
            for key in ("forward", "results_to"):
                problems += _destinations(("rules", i, key), getattr(rule, key) or (), named, CALLER)
            wait = self.completion.max_wait_seconds
            if rule.quiet_seconds is not None and rule.quiet_seconds > wait:
                why = f"must be <= completion.max_wait_seconds ({wait:g}), not {rule.quiet_seconds:g}"
                problems.append((("rules", i, "quiet_seconds"), why))
        for key in ("forward", "results_to"):
            problems += _destinations(("fallback", key), getattr(self.fallback, key) or (), named, CALLER)
        if self.rules and "models" in self.analysis.model_fields_set:
            problems.append((("analysis", "models"), MODELS_WITH_RULES))
        if not self.rules and "fallback" in self.model_fields_set:
            why = "only with [[rules]]: without rules, every complete study is analysed as [analysis] says"
            problems.append((("fallback",), why))
        return problems

    def peer(self, name: str) -> Peer:
        """The peer called ``name``; ``KeyError`` if there is none."""
        for peer in self.peers:
            if peer.name == name:
                return peer
        raise KeyError(name)

    def effective_rules(self) -> tuple[Rule, ...]:
        """The rules the router follows: ``[[rules]]`` as configured, or, without any, the ``[analysis]`` rule.

        A config without ``[[rules]]`` works as before rules existed: its rules are one study-level rule
        named ``analysis`` that matches every study, analyses it with ``analysis.models`` and sends the
        results to ``analysis.send_results_to`` (none at all when ``analysis.models`` is empty).
        """
        if self.rules or not self.analysis.models:
            return self.rules
        return (Rule(name="analysis", level="study", analyse=self.analysis.models),)

    def models_in_use(self) -> tuple[str, ...]:
        """Every model the effective rules and ``[fallback]`` name, in order of first mention: workers load these."""
        names = [model for rule in self.effective_rules() for model in rule.analyse]
        return tuple(dict.fromkeys([*names, *self.fallback.analyse]))

    def results_to(self, rule: Rule | Fallback) -> tuple[str, ...]:
        """Where the analysis results of ``rule`` go: its ``results_to``, else ``analysis.send_results_to``."""
        return rule.results_to if rule.results_to is not None else self.analysis.send_results_to


def _destinations(loc: Loc, names: tuple[str, ...], named: dict[str, Peer], *also: str) -> list[tuple[Loc, str]]:
    """Problems of a list of destinations: each a peer that can receive (or one of ``also``, such as '@caller')."""
    problems: list[tuple[Loc, str]] = []
    known = ", ".join(named) or "none"
    known += "".join(f"; or '{name}'" for name in also)
    for name in names:
        if name in also:
            continue
        target = named.get(name)
        if target is None:
            problems.append((loc, f"'{name}' is not a peer (peers: {known})"))
        elif not target.can_receive:
            problems.append((loc, f"peer '{name}' has no host and port to send to"))
    return problems


def _name_rules(problems: list[tuple[Loc, str]], data: Any) -> list[tuple[Loc, str]]:
    """Key paths under ``rules`` name the rule too: ``rules.2 (chest-ct).forward``."""
    rules = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(rules, list):
        return problems
    named: list[tuple[Loc, str]] = []
    for loc, message in problems:
        if len(loc) > 1 and loc[0] == "rules" and isinstance(loc[1], int) and loc[1] < len(rules):
            rule = rules[loc[1]]
            name = rule.get("name") if isinstance(rule, dict) else None
            if isinstance(name, str):
                loc = ("rules", f"{loc[1]} ({name})", *loc[2:])
        named.append((loc, message))
    return named


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
        problems = _name_rules(_readable(exc.errors()), data)
        raise ConfigError(format_validation_error(source, _problems(problems))) from None


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
