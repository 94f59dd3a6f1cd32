"""Reading JSON documents (tasks, and the pieces other modules own) field by field.

:class:`Fields` wraps one JSON object at a dotted path (``target.hints``). Each ``get`` checks a
field's type and records that someone asked for it; ``done`` then refuses any field nobody
asked for, suggesting the closest known name. Every error is a
:class:`~peagent.errors.TaskError` naming the field, what was expected and what was found.
"""

from __future__ import annotations

import difflib
from typing import Any

from peagent.errors import TaskError, describe

_MISSING = object()


class Fields:
    """Reads one JSON object field by field and refuses fields nobody asked for."""

    def __init__(self, obj: object, path: str) -> None:
        if not isinstance(obj, dict):
            raise TaskError(path, "an object", describe(obj))
        self.obj: dict[str, Any] = obj
        self.path = path
        self.known: list[str] = []

    def field(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path != "task" else key

    def get(self, key: str, kind: type | tuple[type, ...], expected: str, default: Any = _MISSING) -> Any:
        self.known.append(key)
        if key not in self.obj:
            if default is _MISSING:
                raise TaskError(self.field(key), expected, "nothing (the field is required)")
            return default
        value = self.obj[key]
        # JSON booleans are ints in Python; an int field must not accept true/false.
        if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
            raise TaskError(self.field(key), expected, describe(value))
        return value

    def done(self) -> None:
        for key in self.obj:
            if key not in self.known:
                close = difflib.get_close_matches(key, self.known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise TaskError(
                    self.field(key), f"one of the fields {', '.join(self.known)}", f"unknown field{hint}"
                )


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)
