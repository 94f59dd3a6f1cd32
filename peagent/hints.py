"""Root-device hints: how a task names the disk to deploy to.

The keys are those of OpenStack Ironic's root device hints, so that users can bring theirs:
``size`` (GiB, integer), ``model``, ``vendor``, ``serial``, ``wwn``, ``wwn_with_extension``,
``wwn_vendor_extension``, ``name`` (``/dev/sda`` or ``sda``), ``rotational`` (boolean),
``hctl`` and ``by_path``. A disk matches when every given hint matches. This version compares
plain values (strings exactly, ``size`` as whole GiB); Ironic's operators are not implemented
yet, and a value carrying one simply matches nothing, which target selection reports.

Hints are validated when the task is read: an unknown key or a wrongly typed value is an error
naming the hint, because a hint that is silently dropped picks the wrong disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from peagent.errors import TaskError, describe

GIB = 1 << 30

# Key -> (type, description for errors).
HINT_KEYS: dict[str, tuple[type, str]] = {
    "size": (int, "a size in GiB (integer)"),
    "model": (str, "a model string"),
    "vendor": (str, "a vendor string"),
    "serial": (str, "a serial number"),
    "wwn": (str, "a WWN"),
    "wwn_with_extension": (str, "a WWN with extension"),
    "wwn_vendor_extension": (str, "a WWN vendor extension"),
    "name": (str, "a device name like /dev/sda"),
    "rotational": (bool, "true or false"),
    "hctl": (str, "a SCSI address like 0:0:0:0"),
    "by_path": (str, "a /dev/disk/by-path/ link"),
}


class HintedDisk(Protocol):
    """What hints look at; peagent.inventory.Disk provides it."""

    def hint_value(self, key: str) -> str | int | bool | None: ...


@dataclass(frozen=True)
class Hints:
    items: tuple[tuple[str, str | int | bool], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.items)

    def matches(self, disk: HintedDisk) -> bool:
        return all(_match(key, want, disk.hint_value(key)) for key, want in self.items)

    def describe(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.items) or "no hints"


def _match(key: str, want: str | int | bool, have: str | int | bool | None) -> bool:
    if have is None:
        return False
    if key == "name":
        return _devname(str(want)) == _devname(str(have))
    if key == "size":
        return isinstance(have, int) and have // GIB == want
    return have == want


def _devname(name: str) -> str:
    return name.removeprefix("/dev/")


def parse_hints(obj: dict[str, object], field: str) -> Hints:
    items: list[tuple[str, str | int | bool]] = []
    for key, value in obj.items():
        if key not in HINT_KEYS:
            raise TaskError(f"{field}.{key}", f"a hint key, one of {', '.join(HINT_KEYS)}", "an unknown key")
        kind, expected = HINT_KEYS[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TaskError(f"{field}.{key}", expected, describe(value))
        items.append((key, value))  # type: ignore[arg-type]
    return Hints(tuple(items))
