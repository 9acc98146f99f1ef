"""The error every sweep-file check raises, and the small checks the parts of a sweep file share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn


class SpecError(ValueError):
    """A sweep file breaks a rule: the message gives the file, then the key path, the rule and the value."""


def fail(path: str, rule: str, value: object) -> NoReturn:
    raise SpecError(f"{path}: {rule}, but got {value!r}")


def check_keys(path: str, raw: object, valid: tuple[str, ...], required: tuple[str, ...] = ()) -> Mapping:
    if not isinstance(raw, Mapping):
        fail(path, "must be a mapping", raw)
    unknown = [str(k) for k in raw if k not in valid]
    if unknown:
        where = f"{path}." if path else ""
        also = f" (also unknown: {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
        of = f" of {path}" if path else ""
        raise SpecError(f"{where}{unknown[0]}: unknown key{also}; valid keys{of} are {', '.join(valid)}")
    missing = [k for k in required if k not in raw]
    if missing:
        where = f"{path}." if path else ""
        raise SpecError(f"{where}{missing[0]}: required, but missing (a {path or 'sweep file'} needs "
                        f"{', '.join(required)})")
    return raw


def number(path: str, value: object, *, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        fail(path, "expected an integer" if integer else "expected a number", value)
    return value


def check_mode(path: str, value: object) -> None:
    if value not in ("max", "min"):
        fail(path, "must be 'max' or 'min'", value)
