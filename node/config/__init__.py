"""The node's configuration: one frozen pydantic model tree, read once from a TOML file.

:func:`load_config` is the only place the node reads settings (no other file, no environment); every
key is documented in ``config/node.toml``, the routing rules in :mod:`node.config.rules`. Unknown keys are
refused everywhere. Problems are reported together, one line each (the file, the key path with list items
by 0-based index, and for a rule its name, what is wrong and what is allowed); rules between keys are
checked once those keys are valid themselves::

    node.toml: peers.1.port: must be 1..65535, not 70000
    node.toml: analysis.send_results_to: 'pacs' is not a peer (peers: archive)
    node.toml: rules.2 (chest-ct).forward: 'archiv' is not a peer (peers: pacs, research; or '@caller')

Relative paths (``node.data_dir``, ``analysis.models_dir``) start at the config file's folder.

Modules: :mod:`~node.config.base` (section base class, value types, error helpers),
:mod:`~node.config.sections` (the sections), :mod:`~node.config.rules` (``[[rules]]``, ``[fallback]``),
:mod:`~node.config.tree` (:class:`NodeConfig` and reading it).
"""

from __future__ import annotations

from node.config.base import (
    AETitle,
    ConfigPath,
    Host,
    IPAddress,
    IPNetwork,
    Loc,
    ModelName,
    Port,
    Seconds,
    Slug,
)
from node.config.rules import (
    CALLER,
    AllOf,
    AnyOf,
    Comparison,
    Condition,
    Fallback,
    Not,
    Operators,
    Rule,
)
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
from node.config.tree import NodeConfig, load_config, parse_config

__all__ = [
    "CALLER",
    "AETitle",
    "AllOf",
    "Analysis",
    "AnyOf",
    "Comparison",
    "Completion",
    "Condition",
    "ConfigPath",
    "Duplicates",
    "Fallback",
    "Host",
    "IPAddress",
    "IPNetwork",
    "Limits",
    "Loc",
    "Logging",
    "ModelName",
    "NodeConfig",
    "NodeSection",
    "Not",
    "Operators",
    "Peer",
    "Port",
    "Receive",
    "Retention",
    "Rule",
    "Seconds",
    "Sender",
    "Slug",
    "Workers",
    "load_config",
    "parse_config",
]
