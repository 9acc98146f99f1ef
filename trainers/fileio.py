"""Whole files or none: every file (and checkpoint directory) s4sweep writes for another process or a later run to read
goes through `atomic_write`. A reader, or a run interrupted and resumed, never sees a half-written one.

The new content is written under a temporary name beside the target, `.<name>.tmp-<pid>` (same directory, so the
rename stays on one filesystem; the pid tells a cleaner whether its writer still lives, trainers/data/idd.py), then
renamed over the target with `os.replace`, which is atomic on POSIX and Windows. A write that raises leaves the old
file as it was and no temporary behind. A leaf module (standard library only), so trainers and orchestrator share it.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

TMP_MARK = ".tmp-"


def temporary_name(path: Path) -> Path:
    """`.<name>.tmp-<this pid>` beside `path`: hidden, and named after the process that writes it."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def writer_pid(tmp: Path) -> int | None:
    """The pid in a temporary's name (`temporary_name`), or None if the name is not one."""
    if not tmp.name.startswith("."):
        return None
    pid = tmp.name.rpartition(TMP_MARK)[2]
    return int(pid) if TMP_MARK in tmp.name and pid.isdigit() else None


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call `write(tmp)` to make the new content at a temporary path, then rename it to `path`; returns `path`.

    `write` may make a file or a directory (a checkpoint): a directory replaces the old one, which is deleted just
    before the rename (a directory cannot be renamed over a non-empty one), so only that moment is not atomic.
    """
    path = Path(path)
    tmp = temporary_name(path)
    _remove(tmp)  # left by a killed process that had this pid
    try:
        write(tmp)
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        _remove(tmp)
    return path


def write_text(path: Path, text: str) -> Path:
    """`atomic_write` of UTF-8 text."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
