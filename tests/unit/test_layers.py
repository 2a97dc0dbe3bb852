"""Data flows one way (DESIGN.md §2): a stage imports shared modules and earlier stages, never later ones."""

from __future__ import annotations

import ast
from pathlib import Path

NODE = Path(__file__).resolve().parents[2] / "node"
SHARED = {"config", "errors", "logs", "paths", "validation", "sqlite", "dicom", "audit", "metrics", "bell", "__init__"}
# Stages in the order they may depend on each other. "store" comes first: the receiver's handler writes
# through it. "synth" (test data) may be used by analysis (evaluation) only. "worker" runs analyse and
# encode and enqueues sends and notifications (node.notify: webhook, HL7); "web" shows everything.
ORDER = ["store", "receive", "jobs", "synth", "routing", "analyse", "encode", "send", "notify", "worker", "web"]
TOP = {
    "cli",
    "commands",
    "app",
    "children",
    "processes",
    "__main__",
}  # composition and command line: may import anything


def _part(module: str) -> str:
    return module.split(".")[1] if module.startswith("node.") and module.count(".") >= 1 else module


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("node."):
            found.add(_part(node.module))
        elif isinstance(node, ast.Import):
            found |= {_part(a.name) for a in node.names if a.name.startswith("node.")}
    return found


def test_no_stage_imports_a_later_stage_and_shared_modules_import_no_stage() -> None:
    problems = []
    for path in sorted(NODE.rglob("*.py")):
        rel = path.relative_to(NODE)
        owner = rel.parts[0].removesuffix(".py")
        if owner in TOP:
            continue
        for imported in _imports(path) - SHARED - {owner}:
            if owner in SHARED:
                problems.append(f"{rel}: shared module imports stage '{imported}'")
            elif imported in TOP:
                problems.append(f"{rel}: imports the command line ('{imported}')")
            elif imported in ORDER and owner in ORDER and ORDER.index(imported) > ORDER.index(owner):
                problems.append(f"{rel}: stage '{owner}' imports later stage '{imported}'")
    assert not problems, "\n".join(problems)


def test_the_queue_package_is_never_called_queue() -> None:
    assert not (NODE / "queue").exists() and not (NODE / "queue.py").exists()
