"""Sweep files (YAML), one per study; a package so they ship with the install. `s4sweep spaces` lists them."""

from __future__ import annotations

from pathlib import Path


def shipped_files() -> list[Path]:
    """The sweep files of this package, sorted by name."""
    return sorted(Path(__file__).resolve().parent.glob("*.yaml"))
