"""Settings dataclasses from plain dicts (JSON, YAML, checkpoints): one strict rule for every config of the
library. The lowest layer of afloc: it imports no other afloc module."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, what: str) -> T:
    """``cls(**data)`` for a dataclass, recursing into fields whose type is itself a dataclass; lists become
    tuples where the field's default is a tuple (JSON has no tuples). A missing key takes the dataclass's default.

    Raises:
        ValueError: ``data`` is not a mapping, or it has keys ``cls`` does not define (named, with ``what``).
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a mapping of settings, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"unknown {what} keys {sorted(unknown)}; expected a subset of {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        kind = hints.get(name)
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            value = from_dict(kind, value, f"{name} {what}")
        elif isinstance(value, list) and isinstance(fields[name].default, tuple):
            value = tuple(value)
        values[name] = value
    return cls(**values)
