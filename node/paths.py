"""Where the node finds the files it ships with (models), for every stage and command."""

from __future__ import annotations

from pathlib import Path


def default_models_dir() -> Path:
    """``models/`` beside the package (a source checkout), the place cards are looked up by name."""
    return Path(__file__).resolve().parents[1] / "models"
