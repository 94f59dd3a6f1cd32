"""The status event, schema 1: one JSON object that says what happened to a deployment, and when.

Every sink speaks this one shape (docs/status.md): the agent's journal and HTTP posts, the new
OS's deployment record, the first-boot report, and the DP server that stores them. An event is
identified by its own ``id``, so a replay after a lost answer is recognised as the same event
(idempotent), and is ordered by ``source`` (server, pe, firstboot) and ``seq`` within it.

:class:`Event` is what an emitter builds; :meth:`Event.to_json` is the JSON object it sends.
:func:`validate_event` is what a receiver runs on a JSON value it did not build: it checks every
field against the schema, refuses unknown fields (a typo must not silently drop data) and returns
the event with its optional fields filled in. A malformed event raises :class:`EventError`
naming the field (a dotted path such as ``machine.macs[1]``), what was expected and what was found.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from peagent.errors import FieldError, describe

SCHEMA = 1
MAX_EVENT_BYTES = 64 << 10  # the whole event, as compact UTF-8 JSON
MAX_MESSAGE = 4000
MAX_STEP = 200
MAX_WARNINGS = 50
SOURCES = ("server", "pe", "firstboot")  # also the order of a timeline
LEVELS = ("info", "warning", "error")
MACHINE_KEYS = ("macs", "uuid", "serial", "vendor", "model", "hostname")

EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{8,80}")
DEPLOYMENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
PHASE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
ERROR_CODE = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


class EventError(FieldError):
    """A received event does not follow schema 1: names the field, what was expected and what was found."""

    subject = "event field "


@dataclass(frozen=True)
class Event:
    """One status event as an emitter builds it (the JSON form is :meth:`to_json`)."""

    id: str
    deployment_id: str
    seq: int
    source: str
    time: float
    phase: str
    message: str
    step: str | None = None
    level: str = "info"
    machine: dict[str, Any] = field(default_factory=dict)
    done: int | None = None
    total: int | None = None
    rate: float | None = None
    eta: float | None = None
    retries: int = 0
    warnings: tuple[str, ...] = ()
    error: dict[str, str] | None = None  # {"code": "fetch.failed", "message": "..."}
    dp: str | None = None
    data: dict[str, Any] | None = None  # a step's structured result (public part only: no secrets)

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON object (a dict of JSON values), ``schema`` first."""
        return {
            "schema": SCHEMA, "id": self.id, "deployment_id": self.deployment_id, "seq": self.seq,
            "source": self.source, "time": self.time, "phase": self.phase, "step": self.step,
            "message": self.message, "level": self.level, "machine": dict(self.machine), "done": self.done,
            "total": self.total, "rate": self.rate, "eta": self.eta, "retries": self.retries,
            "warnings": list(self.warnings), "error": None if self.error is None else dict(self.error),
            "dp": self.dp, "data": self.data,
        }


def validate_event(obj: object) -> dict[str, Any]:
    """Check a received JSON value against schema 1; return it with every optional field present.

    Required: ``schema``, ``id``, ``deployment_id``, ``seq``, ``source``, ``time``, ``phase``,
    ``message``. The others default to null (``level`` to "info", ``retries`` to 0, ``warnings`` to
    [], ``machine`` to {}). MACs are returned lower case. Raises :class:`EventError`.
    """
    if not isinstance(obj, dict):
        raise EventError("event", "a JSON object", describe(obj))
    # surrogatepass: a JSON "\udc80" escape decodes to a lone surrogate, which plain UTF-8 cannot encode
    size = len(json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8", "surrogatepass"))
    if size > MAX_EVENT_BYTES:
        raise EventError("event", f"at most {MAX_EVENT_BYTES} bytes of JSON", f"{size} bytes")
    for key in obj:
        if key not in _FIELDS:
            raise EventError(str(key), f"one of the fields {', '.join(_FIELDS)}", "an unknown field")
    out: dict[str, Any] = {}
    for key, check in _FIELDS.items():
        if key in obj:
            out[key] = check(obj[key], key)
        elif key in _DEFAULTS:
            out[key] = _DEFAULTS[key]()
        else:
            raise EventError(key, _EXPECTED[key], "nothing (the field is required)")
    return out


def _schema(value: object, name: str) -> int:
    if _is_int(value) and value == SCHEMA:
        return SCHEMA
    raise EventError(name, f"{SCHEMA} (the schema this receiver reads)", describe(value))


def _pattern(regex: re.Pattern[str], expected: str) -> Any:
    def check(value: object, name: str) -> str:
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise EventError(name, expected, describe(value))
        return value
    return check


def _count(value: object, name: str) -> int:
    if not _is_int(value) or value < 0:
        raise EventError(name, "an integer >= 0", describe(value))
    return value


def _optional_count(value: object, name: str) -> int | None:
    return None if value is None else _count(value, name)


def _optional_amount(value: object, name: str) -> float | None:
    if value is None:
        return None
    if not _is_number(value) or value < 0:
        raise EventError(name, "a number >= 0 or null", describe(value))
    return value


def _time(value: object, name: str) -> float:
    if not _is_number(value):
        raise EventError(name, "a number (seconds since the epoch)", describe(value))
    return value


def _source(value: object, name: str) -> str:
    if value not in SOURCES:
        raise EventError(name, f"one of {', '.join(SOURCES)}", describe(value))
    return str(value)


def _level(value: object, name: str) -> str:
    if value not in LEVELS:
        raise EventError(name, f"one of {', '.join(LEVELS)}", describe(value))
    return str(value)


def _text(limit: int, nullable: bool) -> Any:
    expected = f"a string of at most {limit} characters" + (" or null" if nullable else "")

    def check(value: object, name: str) -> str | None:
        if value is None and nullable:
            return None
        if not isinstance(value, str) or len(value) > limit:
            found = f"a string of {len(value)} characters" if isinstance(value, str) else describe(value)
            raise EventError(name, expected, found)
        return value
    return check


def _optional_string(value: object, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise EventError(name, "a string or null", describe(value))
    return value


def _machine(value: object, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise EventError(name, f"an object with {', '.join(MACHINE_KEYS)}", describe(value))
    out: dict[str, Any] = {}
    for key, item in value.items():
        where = f"{name}.{key}"
        if key == "macs":
            out[key] = _macs(item, where)
        elif key in MACHINE_KEYS:
            out[key] = _optional_string(item, where)
        else:
            raise EventError(where, f"one of the fields {', '.join(MACHINE_KEYS)}", "an unknown field")
    return out


def _macs(value: object, name: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise EventError(name, "a list of MAC addresses like 52:54:00:12:34:56", describe(value))
    for i, mac in enumerate(value):
        if not isinstance(mac, str) or not MAC.fullmatch(mac):
            raise EventError(f"{name}[{i}]", "a MAC address like 52:54:00:12:34:56", describe(mac))
    return [mac.lower() for mac in value]


def _warnings(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_WARNINGS:
        raise EventError(name, f"a list of at most {MAX_WARNINGS} strings", describe(value))
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise EventError(f"{name}[{i}]", "a string", describe(item))
    return list(value)


def _error(value: object, name: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise EventError(name, 'null or an object {"code", "message"}', describe(value))
    for key in value:
        if key not in ("code", "message"):
            raise EventError(f"{name}.{key}", "one of the fields code, message", "an unknown field")
    if "code" not in value:
        raise EventError(f"{name}.code", "an error code like fetch.failed", "nothing (the field is required)")
    code = _pattern(ERROR_CODE, "an error code like fetch.failed (a-z, 0-9 and ._-, at most 64)")(
        value["code"], f"{name}.code")
    if "message" not in value:
        raise EventError(f"{name}.message", "a string (for people)", "nothing (the field is required)")
    message = _text(MAX_MESSAGE, nullable=False)(value["message"], f"{name}.message")
    return {"code": code, "message": message}


def _data(value: object, name: str) -> dict[str, Any] | None:
    if value is not None and not isinstance(value, dict):
        raise EventError(name, "an object or null", describe(value))
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not 1


def _is_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


_FIELDS: dict[str, Any] = {
    "schema": _schema,
    "id": _pattern(EVENT_ID, "8-80 of A-Z a-z 0-9 . _ : -"),
    "deployment_id": _pattern(DEPLOYMENT_ID, "1-64 of A-Z a-z 0-9 . _ : -"),
    "seq": _count,
    "source": _source,
    "time": _time,
    "phase": _pattern(PHASE, "a phase name: a-z first, then up to 31 of a-z 0-9 _ -"),
    "step": _text(MAX_STEP, nullable=True),
    "message": _text(MAX_MESSAGE, nullable=False),
    "level": _level,
    "machine": _machine,
    "done": _optional_count,
    "total": _optional_count,
    "rate": _optional_amount,
    "eta": _optional_amount,
    "retries": _count,
    "warnings": _warnings,
    "error": _error,
    "dp": _optional_string,
    "data": _data,
}
_DEFAULTS: dict[str, Any] = {
    "step": lambda: None, "level": lambda: "info", "machine": dict, "done": lambda: None, "total": lambda: None,
    "rate": lambda: None, "eta": lambda: None, "retries": lambda: 0, "warnings": list, "error": lambda: None,
    "dp": lambda: None, "data": lambda: None,
}
_EXPECTED = {
    "schema": f"{SCHEMA}", "id": "the event's own id (8-80 of A-Z a-z 0-9 . _ : -)",
    "deployment_id": "the task's id", "seq": "an integer >= 0", "source": f"one of {', '.join(SOURCES)}",
    "time": "a number (seconds since the epoch)", "phase": "a phase name", "message": "a string",
}
