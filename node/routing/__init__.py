"""The routing stage: what happens to a complete study (for now: the configured analyses)."""

from __future__ import annotations

from node.routing.router import Router

__all__ = ["Router"]
