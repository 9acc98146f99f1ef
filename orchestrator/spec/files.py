"""Where sweep files are (the shipped ones, a path given on the command line) and how one is read: YAML that
refuses duplicate keys and reads `1e-5` as a number."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from orchestrator.spec.rules import SpecError


def shipped_spaces() -> list[Path]:
    """The sweep files installed with the package (search_spaces/*.yaml), sorted by name."""
    from search_spaces import shipped_files

    return shipped_files()


def resolve_spec_path(arg: str | None) -> Path:
    """None -> the shipped smoke.yaml; a bare name (`smoke`) -> that shipped file; else an existing file."""
    shipped = {p.stem: p for p in shipped_spaces()}
    known = ", ".join(shipped) or "none"
    name = "smoke" if arg is None else arg
    if "/" not in name and os.sep not in name and not name.endswith((".yaml", ".yml")) and name in shipped:
        return shipped[name]
    path = Path(name).expanduser().resolve()
    if not path.is_file():
        raise SpecError(f"{path}: no such sweep file (shipped sweeps: {known})")
    return path


def read_sweep_file(path: Path) -> tuple[Any, str]:
    """The parsed YAML of an absolute path, and the sha256 of its bytes."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the sweep file ({e.strerror})") from None
    try:
        loader = _Loader(raw.decode("utf-8"))
        loader.name = path.name  # YAML error marks name it with the line
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: not a valid YAML file: {e}") from None
    return data, hashlib.sha256(raw).hexdigest()


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads `1e-5` as a number (YAML 1.1 would need `1.0e-5`)."""


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, Hashable) and key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
                              list("-+0123456789."))
