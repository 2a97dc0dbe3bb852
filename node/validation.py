"""Shared helpers for validated settings (config file, model cards): one way to report what is wrong."""

from __future__ import annotations

from pydantic import ValidationError


def format_validation_error(source: str, error: ValidationError) -> str:
    """One line per problem: ``source: key.path: message``."""
    lines = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{source}: {path}: {message}")
    return "\n".join(lines)
