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
    """None -> the shipped smoke.yaml; a bare name (`smoke`) -> that shipped file; else an existing regular file."""
    shipped = {p.stem: p for p in shipped_spaces()}
    known = ", ".join(shipped) or "none"
    name = "smoke" if arg is None else arg
    if "/" not in name and os.sep not in name and not name.endswith((".yaml", ".yml")) and name in shipped:
        return shipped[name]
    given = Path(name).expanduser()
    try:
        path = given.resolve()
    except (RuntimeError, OSError) as e:  # Python 3.11 raises RuntimeError on a symlink loop
        raise SpecError(f"{given.absolute()}: cannot be resolved: symlink loop or unreadable ({e})") from None
    if path.is_dir():
        raise SpecError(f"{path}: is a directory, not a sweep file")
    if path.exists() and not path.is_file():  # a FIFO would block the read forever, a device never end
        raise SpecError(f"{path}: not a regular file (a FIFO, socket or device); a sweep file is a YAML text file")
    if not path.is_file():
        raise SpecError(f"{path}: no such sweep file (shipped sweeps: {known})")
    return path


def read_sweep_file(path: Path) -> tuple[Any, str]:
    """The parsed YAML of an absolute path, and the sha256 of its bytes. Every refusal is one line naming the file
    (and for YAML errors the line and column)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SpecError(f"{path}: cannot read the sweep file ({e.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start}); a sweep file is YAML") \
            from None
    try:
        loader = _Loader(text)
        loader.name = path.name
        try:
            data = loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: {_one_line(e)}") from None
    except RecursionError:
        raise SpecError(f"{path}: nested more than {MAX_DEPTH} levels deep; a sweep file is a few levels of "
                        "mappings and lists") from None
    _check_size(path, data)
    return data, hashlib.sha256(raw).hexdigest()


MAX_VALUES = 100_000  # values in a sweep file once YAML aliases are expanded (the shipped ones hold a few hundred)
MAX_DEPTH = 100  # nesting of mappings and lists


def _check_size(path: Path, data: Any) -> None:
    """Refuse a file whose aliases expand to more than MAX_VALUES values (`a: &a [x, x]`, `b: [*a, *a]`, ... doubles
    at each line: a few hundred bytes of YAML can stand for billions of strings) or that nests deeper than MAX_DEPTH.
    Sizes are counted once per shared node, so the count itself never expands anything."""
    sizes: dict[int, int] = {}

    def size(value: Any, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise SpecError(f"{path}: nested more than {MAX_DEPTH} levels deep; a sweep file is a few levels of "
                            "mappings and lists")
        if not isinstance(value, (dict, list)):
            return 1
        if id(value) not in sizes:
            children = value.values() if isinstance(value, dict) else value
            sizes[id(value)] = 1 + sum(size(v, depth + 1) for v in children)
        return sizes[id(value)]

    if size(data, 0) > MAX_VALUES:
        raise SpecError(f"{path}: more than {MAX_VALUES} values once YAML aliases are expanded (anchors `&` "
                        "referenced by `*` again and again); write the values out")


def _one_line(error: yaml.YAMLError) -> str:
    """`not valid YAML at line 3, column 1: expected ',' or '}' (while parsing a flow mapping)`."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        context = f" ({error.context})" if error.context and error.problem else ""
        return f"not valid YAML{where}: {error.problem or error.context}{context}"
    if isinstance(error, yaml.reader.ReaderError):
        return f"not valid YAML at byte {error.position}: unacceptable character #x{error.character:04x}"
    return f"not valid YAML: {str(error).splitlines()[0]}"


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads `1e-5` as a number (YAML 1.1 would need `1.0e-5`)."""


def _mapping_without_duplicates(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, Hashable):  # `? [a, b]: 1`
            raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                    f"found unhashable key {key!r}", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)
_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
                              list("-+0123456789."))
