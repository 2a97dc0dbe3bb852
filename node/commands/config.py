"""``pacs-node check-config FILE``: validate a config file and its models without starting anything."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from node.analyse.card import ModelCard, find_card
from node.config import NodeConfig, Peer, load_config
from node.errors import ConfigError, NodeError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate a config file (and its models) without starting anything",
        description="Read FILE, check every key, and load the card of each model the rules use (which also "
        "checks the ONNX file's sha256). Prints 'FILE: valid' and a summary (exit 0), or every problem, one line "
        "each, on stderr (exit 1). Nothing is started, created or written.",
        epilog="example: pacs-node check-config config/node.toml",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the node's TOML config file")
    p.set_defaults(func=run)


def check_models(config: NodeConfig, source: str) -> tuple[list[ModelCard], list[str]]:
    """Load the card of each model the rules use; return the cards and one line per problem.

    Problems are reported under the key that names the model: ``rules.N (name).analyse.J``,
    ``fallback.analyse.J``, or ``analysis.models.J`` for a config without rules.
    """
    where: dict[str, str] = {}
    for i, rule in enumerate(config.rules):
        for j, name in enumerate(rule.analyse):
            where.setdefault(name, f"rules.{i} ({rule.name}).analyse.{j}")
    for j, name in enumerate(config.fallback.analyse):
        where.setdefault(name, f"fallback.analyse.{j}")
    for j, name in enumerate(config.analysis.models):
        where.setdefault(name, f"analysis.models.{j}")
    cards: list[ModelCard] = []
    problems: list[str] = []
    for name in config.models_in_use():
        try:
            cards.append(find_card(name, config.analysis.models_dir))
        except NodeError as exc:
            problems += [f"{source}: {where.get(name, name)}: {line}" for line in str(exc).splitlines()]
    return cards, problems


def _role(peer: Peer, config: NodeConfig) -> str:
    roles = []
    if peer.allow_store:
        nets = [str(net.network_address) if net.num_addresses == 1 else str(net) for net in peer.addresses]
        where = ", ".join(nets) or "any address"
        roles.append(f"may send to us from {where}")
    if peer.can_receive:
        receives = "receives results" if peer.name in config.analysis.send_results_to else "we can send to it"
        roles.append(f"{receives} at {peer.host}:{peer.port}")
    return "; ".join(roles) or "unused (no allow_store, no host and port)"


def summary(config: NodeConfig, cards: list[ModelCard]) -> list[str]:
    """A few lines an administrator can check at a glance."""
    node, data = config.node, config.node.data_dir
    lines = [
        f"  node      {node.ae_title} listening on {node.bind}:{node.port}",
        f"  data      {data}{'' if data.is_dir() else ' (does not exist yet)'}",
    ]
    for i, peer in enumerate(config.peers):
        lines.append(f"  {'peers' if i == 0 else '':<9} {peer.name} ({peer.ae_title}): {_role(peer, config)}")
    if not config.peers:
        lines.append("  peers     none")
    for i, card in enumerate(cards):
        label = "models" if i == 0 else ""
        lines.append(f"  {label:<9} {card.model.name} {card.model.version} (sha256 verified) in {card.directory}")
    if not cards:
        lines.append("  models    none (no rule analyses anything)")
    if config.rules:
        for i, rule in enumerate(config.rules):
            label = "rules" if i == 0 else ""
            lines.append(f"  {label:<9} {rule.name} [{rule.level}]")
    else:
        targets = ", ".join(config.analysis.send_results_to) or "nowhere (analysis.send_results_to is empty)"
        lines.append(f"  results   sent to {targets}")
    lines.append(f"  retention {_retention(config)}")
    lines.append(f"  web       {_web(config)}")
    return lines


def _web(config: NodeConfig) -> str:
    web = config.web
    if not web.enabled:
        return "off ([web] enabled = false)"
    users = f"{len(web.users)} users" if web.users else "no users (serve prints a one-time login URL)"
    return f"console on {web.scheme}://{web.bind}:{web.port}, {users}, {len(web.tokens)} bearer tokens"


def _retention(config: NodeConfig) -> str:
    keep = config.retention
    if not keep.enabled:
        return "off: nothing is ever deleted"
    age = "at the first pass" if keep.keep_days == 0 else f"{keep.keep_days:g} days after their last instance"
    disk = f", or sooner while less than {keep.free_disk_target_mb:,} MB is free" if keep.free_disk_target_mb else ""
    return f"finished studies deleted {age}{disk}"


def run(args: argparse.Namespace) -> int:
    source = str(args.file)
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    cards, problems = check_models(config, source)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print(f"{source}: valid")
    print("\n".join(summary(config, cards)))
    return 0
